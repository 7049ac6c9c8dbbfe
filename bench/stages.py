"""Where a preview's CPU time goes: exclusive per-thread CPU seconds by pipeline stage.

Wraps the engine's stage functions for the length of a ``with StageClock():`` block
(bench only; nothing in the product changes). Each call is charged its thread's CPU
time (``time.thread_time``) minus what nested stages already took, so a stage that
calls another (policy normalizes its objects) is not counted twice. Child processes
(git, kubectl, gpg) are charged by ``RUSAGE_CHILDREN`` around the stages that run
alone in the main thread (export, signatures); the rest of the children's CPU is
the renderers'.
"""

from __future__ import annotations

import functools
import importlib
import resource
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

# (module, attribute, stage): functions looked up by name in the modules that call them.
TARGETS = (
    ("bot.exports", "export_tree", "export"),
    ("bot.preview", "_affected", "affected"),
    ("bot.render.engine", "load_manifests", "parse"),
    ("bot.render.kustomize", "load_manifests", "parse"),
    ("bot.render.plain", "load_manifests", "parse"),
    ("bot.render.batch", "load_manifests", "parse"),
    ("bot.render.engine.RenderEngine", "render", "render"),
    ("bot.render.batch", "render_batch", "render"),
    ("bot.evaluated.NormalizedRenders", "of", "normalize"),
    ("bot.evaluated.PolicyResults", "get_or_evaluate", "policy"),
    ("bot.app_report", "diff_objects", "diff"),
    ("bot.app_report.PolicyPool", "_evaluate", "policy"),
    ("bot.preview", "guard_app_report", "leak guard"),
    ("bot.preview", "_check_signatures", "signatures"),
)
# Stages that run alone in the main thread: their child processes are theirs.
SERIAL = frozenset({"export", "affected", "signatures"})


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu() -> float:
    """CPU seconds of this process and every child it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + _children_cpu()


class StageClock:
    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.children: dict[str, float] = defaultdict(float)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._undo: list[Callable[[], None]] = []

    def stage(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = clock._stack()
            started, children = time.thread_time(), _children_cpu()
            stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                nested = stack.pop()
                spent = time.thread_time() - started
                if stack:
                    stack[-1] += spent
                with clock._lock:
                    clock.cpu[name] += spent - nested
                    if name in SERIAL:
                        clock.children[name] += _children_cpu() - children

        return timed

    def _stack(self) -> list[float]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def __enter__(self) -> StageClock:
        for module_name, attribute, name in TARGETS:
            owner = _resolve(module_name)
            if owner is None or not hasattr(owner, attribute):
                continue
            original = getattr(owner, attribute)
            setattr(owner, attribute, self.stage(name, original))
            self._undo.append(functools.partial(setattr, owner, attribute, original))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def _resolve(dotted: str) -> Any:
    """A module, or a class inside one (``package.module.Class``)."""
    module_name, _, cls = dotted.rpartition(".")
    if dotted in sys.modules or not cls.lstrip("_")[:1].isupper():
        try:
            return importlib.import_module(dotted)
        except ImportError:
            return None
    module = importlib.import_module(module_name)
    return getattr(module, cls, None)


def breakdown(
    clock: StageClock, total_cpu: float, children_total: float
) -> list[tuple[str, float]]:
    """(stage, CPU seconds) rows: in-process time per stage, renderer children under
    "render (child processes)", and whatever no stage claimed as "other"."""
    rows = [(name, clock.cpu[name] + clock.children.get(name, 0.0)) for name in _order(clock)]
    serial_children = sum(clock.children.values())
    rows.append(("render (child processes)", max(0.0, children_total - serial_children)))
    rows.append(("other", max(0.0, total_cpu - sum(value for _, value in rows))))
    return rows


def _order(clock: StageClock) -> list[str]:
    names = [name for _module, _attribute, name in TARGETS if name in clock.cpu]
    names += [name for name in clock.cpu if name not in names]
    return list(dict.fromkeys(names))

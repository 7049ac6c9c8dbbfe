"""Work a preview does once per object: normalize it once, evaluate policy on it once.

:class:`NormalizedRenders` hands the diff, the policy check and the leak guard the same
normalized objects of a render. :class:`PolicyResults` keeps policy results on disk,
keyed by exactly what the engine evaluates (the masked objects, the app's name, path and
namespace, the policy sources, package and backend), so a base render seen before (most
pull requests share their base) is not evaluated again.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

from bot.atomicfile import write_atomically
from bot.diff import normalize
from bot.models import K8sObject, PolicyResult, RenderedApp, Violation

_FORMAT = 1


class NormalizedRenders:
    """Normalized objects per render, computed on first use (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # id(render) -> (render, objects); the render is kept so its id stays unique.
        self._memo: dict[int, tuple[RenderedApp, list[K8sObject]]] = {}

    def of(self, rendered: RenderedApp) -> list[K8sObject]:
        with self._lock:
            found = self._memo.get(id(rendered))
        if found is not None:
            return found[1]
        objects = [normalize(obj, rendered.app.namespace) for obj in rendered.objects]
        with self._lock:
            return self._memo.setdefault(id(rendered), (rendered, objects))[1]


class PolicyResults:
    """Policy results by content under ``directory``; None disables the cache."""

    def __init__(
        self, directory: Path | None, backend: str, package: str, sources: dict[str, str]
    ) -> None:
        self._directory = directory
        digest = hashlib.sha256(
            json.dumps([_FORMAT, backend, package, sources], sort_keys=True).encode()
        )
        self._policy = digest.hexdigest()

    def get_or_evaluate(
        self,
        objects: list[K8sObject],
        meta: dict[str, object],
        evaluate: Callable[[], PolicyResult],
    ) -> PolicyResult:
        if self._directory is None:
            return evaluate()
        try:
            content = json.dumps([self._policy, meta, objects], sort_keys=True)
        except (TypeError, ValueError):
            return evaluate()  # not JSON-representable: evaluate every time
        key = hashlib.sha256(content.encode()).hexdigest()
        path = self._directory / key[:2] / f"{key}.json"
        try:
            return _load(path.read_bytes())
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or damaged: evaluate and overwrite
        result = evaluate()
        if result.error is None:  # an engine failure may be transient
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, json.dumps(result.to_dict()).encode())
        return result


def _load(payload: bytes) -> PolicyResult:
    data = json.loads(payload)
    violations = [Violation(**v) for v in data["violations"]]
    return PolicyResult(verdict=data["verdict"], violations=violations)

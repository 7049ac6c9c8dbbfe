"""Work a preview does once per object: normalize it once, evaluate policy on it once.

:class:`NormalizedRenders` hands the diff, the policy check and the leak guard the same
normalized objects of a render. :class:`PolicyResults` keeps policy results on disk,
keyed by exactly what the engine evaluates (the masked objects, the app's name, path and
namespace, the policy sources, package and backend), so a base render seen before (most
pull requests share their base) is not evaluated again. They are stored the way renders are
(:class:`bot.render.RenderCache`: least recently used entries go first once the directory
holds more than ``SLUICE_RENDER_CACHE_MAX_BYTES``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

from bot.diff import normalize
from bot.models import K8sObject, PolicyResult, RenderedApp, Violation
from bot.render.cache import RenderCache

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
        self._store = RenderCache(directory) if directory is not None else None
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
        if self._store is None:
            return evaluate()
        try:
            content = json.dumps([self._policy, meta, objects], sort_keys=True)
        except (TypeError, ValueError):
            return evaluate()  # not JSON-representable: evaluate every time
        key = hashlib.sha256(content.encode()).hexdigest()
        stored = self._store.get(key)
        if stored is not None:
            try:
                return _load(stored)
            except (ValueError, KeyError, TypeError):
                pass  # damaged: evaluate and overwrite
        result = evaluate()
        if result.error is None:  # an engine failure may be transient
            self._store.put(key, [result.to_dict()])
        return result


def _load(stored: list[K8sObject]) -> PolicyResult:
    (data,) = stored
    violations = [Violation(**v) for v in data["violations"]]
    return PolicyResult(verdict=data["verdict"], violations=violations)

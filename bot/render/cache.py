"""A render cache keyed by content: same inputs, same settings, same engine → same objects.

The key hashes every file the render reads (repo path and bytes), the renderer,
its settings and the engine version, so one entry serves base and head of any
PR, and any later run when ``directory`` is kept. Failed renders are never cached.

The cache holds at most ``max_bytes`` (``SLUICE_RENDER_CACHE_MAX_BYTES``, default
256 MiB): least recently used entries go first. An entry is read in one call, so
removing it can only turn a concurrent hit into a miss, never a wrong answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bot.atomicfile import write_atomically
from bot.cachesize import DEFAULT_RENDER_MAX_BYTES, RENDER_ENV, max_bytes
from bot.models import K8sObject

# 2: renders run on a tree holding only the hashed inputs (ExportTree.confined).
_FORMAT = 2


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int


class RenderCache:
    """Rendered objects by content key, in memory or under ``directory`` on disk."""

    def __init__(self, directory: Path | None = None, max_bytes_: int | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = (
            max_bytes(RENDER_ENV, DEFAULT_RENDER_MAX_BYTES) if max_bytes_ is None else max_bytes_
        )
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        # Bytes on disk as of the last sweep plus what this process wrote since; None: unknown.
        self._usage: int | None = None
        self._lock = threading.Lock()
        # key -> [lock, number of callers holding or waiting for it]
        self._inflight: dict[str, list] = {}
        self._hits = 0
        self._misses = 0

    @staticmethod
    def key(settings: dict[str, object], files: Iterable[tuple[str, bytes]]) -> str:
        """sha256 over the settings and each (repo path, sha256 of bytes), sorted by path."""
        digest = hashlib.sha256()
        digest.update(json.dumps({"format": _FORMAT, **settings}, sort_keys=True).encode())
        for path, data in sorted(files):
            digest.update(b"\0" + path.encode("utf-8", "surrogateescape") + b"\0")
            digest.update(hashlib.sha256(data).digest())
        return digest.hexdigest()

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses)

    def get_or_render(self, key: str, render: Callable[[], list[K8sObject]]) -> list[K8sObject]:
        """The cached objects for ``key``, else ``render()`` (stored unless it raises).

        Concurrent callers with the same key wait for one render instead of repeating it.
        """
        with self._lock:
            gate = self._inflight.setdefault(key, [threading.Lock(), 0])
            gate[1] += 1
        try:
            with gate[0]:
                return self._get_or_render_locked(key, render)
        finally:
            with self._lock:
                gate[1] -= 1
                if gate[1] == 0:
                    del self._inflight[key]

    def get(self, key: str, *, count_miss: bool = True) -> list[K8sObject] | None:
        """The cached objects for ``key``, or None. A hit is counted; a miss is counted
        here, or (``count_miss=False``) by the :meth:`put` or :meth:`get_or_render` that
        follows it."""
        cached = self._load(key)
        with self._lock:
            if cached is None:
                self._misses += count_miss
            else:
                self._hits += 1
        return cached

    def put(self, key: str, objects: list[K8sObject]) -> None:
        """Store objects rendered outside :meth:`get_or_render` (a batch of apps): a miss."""
        with self._lock:
            self._misses += 1
        self._store(key, objects)

    def _get_or_render_locked(
        self, key: str, render: Callable[[], list[K8sObject]]
    ) -> list[K8sObject]:
        cached = self.get(key)
        if cached is not None:
            return cached
        objects = render()
        self._store(key, objects)
        return objects

    def _load(self, key: str) -> list[K8sObject] | None:
        with self._lock:
            payload = self._memory.get(key)
            if payload is not None:
                self._memory.move_to_end(key)
        if payload is None and self.directory is not None:
            path = self._path(key)
            try:
                payload = path.read_bytes()
            except FileNotFoundError:
                return None
            with contextlib.suppress(OSError):
                os.utime(path)  # its last use, for eviction
        if payload is None:
            return None
        try:
            objects = json.loads(payload)["objects"]
        except (ValueError, KeyError, TypeError):
            return None  # a damaged entry is a miss; the render overwrites it
        return objects

    def _store(self, key: str, objects: list[K8sObject]) -> None:
        try:
            payload = json.dumps({"objects": objects}, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            return  # not JSON-representable (e.g. a YAML set): render it every time
        if self.directory is None:
            self._remember(key, payload)
            return
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        write_atomically(path, payload)
        with self._lock:
            self._usage = None if self._usage is None else self._usage + len(payload)
            due = self._usage is None or self._usage > self.max_bytes
        if due:
            self.sweep(keep=key)

    def _remember(self, key: str, payload: bytes) -> None:
        with self._lock:
            self._memory_bytes += len(payload) - len(self._memory.pop(key, b""))
            self._memory[key] = payload
            while self._memory_bytes > self.max_bytes and len(self._memory) > 1:
                _old, dropped = self._memory.popitem(last=False)
                self._memory_bytes -= len(dropped)

    def usage(self) -> int:
        """Bytes the cache holds now."""
        if self.directory is None:
            with self._lock:
                return self._memory_bytes
        return sum(size for _path, _used, size in self._files())

    def sweep(self, keep: str | None = None) -> None:
        """Delete least recently used entries until the cache is under ``max_bytes``."""
        files = sorted(self._files(), key=lambda entry: entry[1])
        total = sum(size for _path, _used, size in files)
        for path, _used, size in files:
            if total <= self.max_bytes:
                break
            if path.stem == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
        with self._lock:
            self._usage = total

    def _files(self) -> list[tuple[Path, float, int]]:
        assert self.directory is not None
        found = []
        for path in self.directory.glob("??/*.json"):
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                found.append((path, info.st_mtime, info.st_size))
        return found

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.json"

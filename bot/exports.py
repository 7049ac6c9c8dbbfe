"""Exports of revisions kept on disk, keyed by the tree they hold, evicted least recently used.

An entry is ``<root>/raw1-<tree id>``: the committed blobs of that tree written by
:func:`bot.gitops.export_tree` (format ``raw1``: bytes as committed, no
``.gitattributes`` processing). Two commits with the same tree share an entry,
and an entry made any other way can never be mistaken for one.

Whoever reads an export holds a lease on it (a shared ``flock`` on its lock
file, so it works across processes); eviction takes the lock exclusively
without waiting and skips any entry it cannot get. The lock file's mtime is the
entry's last use.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bot.atomicfile import write_atomically
from bot.cachesize import DEFAULT_EXPORT_MAX_BYTES, EXPORT_ENV, max_bytes
from bot.gitops import Git, export_tree

FORMAT = "raw1"
_META = ".meta"
# Temporary trees next to the exports: an export being written, one being removed, a
# render's confined tree (bot.render.tree.ExportTree.confined).
_SCRATCH = (".export-", ".evict-", ".render-")
STALE_SCRATCH_S = 3600


class ExportCache:
    """Exports by tree id under ``root``, bounded by ``max_bytes`` (env default)."""

    def __init__(self, root: str | os.PathLike[str], max_bytes_: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / _META).mkdir(exist_ok=True)
        self.max_bytes = (
            max_bytes(EXPORT_ENV, DEFAULT_EXPORT_MAX_BYTES) if max_bytes_ is None else max_bytes_
        )

    def key(self, git: Git, sha: str) -> str:
        return f"{FORMAT}-{git.tree_id(sha)}"

    @contextlib.contextmanager
    def lease(self, git: Git, sha: str, *, like: str | None = None) -> Iterator[Path]:
        """The export of ``sha``, which is not evicted until the ``with`` block ends.

        When it must be made and an export of ``like`` exists, the files the two
        revisions share are hard-linked from it, so a pull request's head costs a
        handful of files instead of the whole tree.
        """
        key = self.key(git, sha)
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._locked(key, fcntl.LOCK_SH))
            dest = self.root / key
            if not dest.is_dir():
                source = None
                if like is not None:
                    like_key = self.key(git, like)
                    stack.enter_context(self._locked(like_key, fcntl.LOCK_SH))
                    if (self.root / like_key).is_dir():
                        source = (like, self.root / like_key)
                self._create(git, sha, key, dest, source)
                self.evict(protect={key})
            yield dest

    def _create(
        self, git: Git, sha: str, key: str, dest: Path, like: tuple[str, Path] | None
    ) -> None:
        try:
            size = export_tree(git, sha, dest, like=like)
        except OSError:
            if not dest.is_dir():  # else a concurrent export of the same tree won the rename
                raise
            return
        write_atomically(self._size_file(key), str(size).encode())

    def usage(self) -> int:
        """Bytes held by the entries this cache knows the size of."""
        return sum(size for _key, _used, size in self._entries())

    def evict(self, *, protect: frozenset[str] | set[str] = frozenset()) -> None:
        """Remove least recently used entries until the total is under ``max_bytes``.

        An entry in use (leased) or in ``protect`` stays, even if that leaves the
        cache over its bound; it becomes evictable when its lease ends.
        """
        self._remove_strays()
        entries = sorted(self._entries(), key=lambda entry: entry[1])
        total = sum(size for _key, _used, size in entries)
        for key, _used, size in entries:
            if total <= self.max_bytes:
                return
            if key not in protect and self._remove_unused(key):
                total -= size

    def _entries(self) -> list[tuple[str, float, int]]:
        """(key, last use, bytes) of every complete entry."""
        found = []
        for size_file in (self.root / _META).glob("*.size"):
            key = size_file.name.removesuffix(".size")
            try:
                size = int(size_file.read_bytes() or 0)
                used = self._lock_file(key).stat().st_mtime
            except (OSError, ValueError):
                continue
            found.append((key, used, size))
        return found

    def _remove_unused(self, key: str) -> bool:
        try:
            with self._locked(key, fcntl.LOCK_EX | fcntl.LOCK_NB, touch=False):
                _remove_tree(self.root / key)
                self._size_file(key).unlink(missing_ok=True)
        except BlockingIOError:
            return False
        return True

    def _remove_strays(self) -> None:
        """Exports in an older format (named by commit, made by ``git archive``), and
        scratch trees that a killed process left behind (no render or export takes
        :data:`STALE_SCRATCH_S`)."""
        now = time.time()
        for path in self.root.iterdir():
            if path.name.startswith(_SCRATCH):
                with contextlib.suppress(FileNotFoundError):
                    if now - path.stat().st_mtime > STALE_SCRATCH_S:
                        shutil.rmtree(path, ignore_errors=True)
            elif not path.name.startswith((".", f"{FORMAT}-")) and path.is_dir():
                _remove_tree(path)

    @contextlib.contextmanager
    def _locked(self, key: str, operation: int, *, touch: bool = True) -> Iterator[None]:
        path = self._lock_file(key)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, operation)
            except BaseException:
                os.close(fd)
                raise
            # The file may have been replaced between open and flock: lock the current one.
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            os.close(fd)
        try:
            if touch:
                os.utime(fd)
            yield
        finally:
            os.close(fd)

    def _lock_file(self, key: str) -> Path:
        return self.root / _META / f"{key}.lock"

    def _size_file(self, key: str) -> Path:
        return self.root / _META / f"{key}.size"


def _remove_tree(path: Path) -> None:
    """Move aside first, so no reader ever sees half an export."""
    if not path.exists():
        return
    trash = Path(tempfile.mkdtemp(prefix=".evict-", dir=path.parent))
    try:
        os.replace(path, trash / "tree")
    finally:
        shutil.rmtree(trash, ignore_errors=True)

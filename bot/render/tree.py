"""Confined access to an exported revision: nothing may resolve outside its root.

Every path a render touches goes through :class:`ExportTree`, which rejects
absolute paths, ``..`` escapes and symlinks whose target lies outside the
export, and enforces the per-file size limit before reading.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from bot.render.limits import RenderError, RenderLimits


class ExportTree:
    """A directory produced by ``Git.export``; paths are repo-relative POSIX strings."""

    def __init__(self, root: Path) -> None:
        self._root = os.path.realpath(root)
        self._prefix = self._root.rstrip("/") + "/"
        self.root = Path(self._root)
        if not self.root.is_dir():
            raise RenderError(f"export root {root} is not a directory")

    def join(self, base: str, ref: str, what: str) -> str:
        """``ref`` (relative to the repo directory ``base``) as a normalized repo path.

        Lexical check only; :meth:`real` checks symlinks.
        """
        if not ref or ref.startswith("/") or "\x00" in ref or "\\" in ref:
            raise RenderError(f"{what}: {ref!r} must be a relative path inside the repository")
        joined = posixpath.normpath(posixpath.join(base, ref))
        if joined == ".." or joined.startswith("../"):
            raise RenderError(f"{what}: {ref!r} leaves the repository")
        return "" if joined == "." else joined

    def real(self, rel: str, what: str) -> Path:
        """The resolved location of ``rel``; refuses one that resolves outside the root."""
        resolved = os.path.realpath(os.path.join(self._root, rel) if rel else self._root)
        if resolved != self._root and not resolved.startswith(self._prefix):
            where = f"{rel or '.'}" if what == rel else f"{what}: {rel or '.'}"
            raise RenderError(f"{where} resolves outside the repository (symlink)")
        return Path(resolved)

    def relative(self, resolved: Path) -> str:
        return str(resolved)[len(self._prefix) :] if resolved != self.root else ""

    def inputs_for(self, rel: str, what: str, resolved: Path | None = None) -> set[str]:
        """``rel`` plus, when it is reached through a symlink, where it really lives."""
        return {rel, self.relative(resolved or self.real(rel, what))}

    def is_file(self, rel: str, what: str) -> bool:
        return self.real(rel, what).is_file()

    def is_dir(self, rel: str, what: str) -> bool:
        return self.real(rel, what).is_dir()

    def read_bytes(self, rel: str, limits: RenderLimits, what: str | None = None) -> bytes:
        what = what or rel
        resolved = self.real(rel, what)
        try:
            info = resolved.stat()
        except FileNotFoundError:
            raise RenderError(f"{what}: file not found") from None
        if not stat.S_ISREG(info.st_mode):
            raise RenderError(f"{what}: not a regular file")
        if info.st_size > limits.max_file_bytes:
            raise RenderError(
                f"{what}: file is {info.st_size} bytes, over the {limits.max_file_bytes}-byte limit"
            )
        return resolved.read_bytes()

    def walk(self, rel: str, what: str) -> list[str]:
        """Every file under directory ``rel`` (recursively, sorted), as repo paths.

        Symlinked directories inside the root are followed once; any symlink
        pointing outside the root is an error, even if nothing would read it.
        """
        found: list[str] = []
        seen: set[Path] = set()
        pending = [rel]
        while pending:
            current = pending.pop()
            resolved = self.real(current, what)
            if resolved in seen:
                continue
            seen.add(resolved)
            with os.scandir(resolved) as entries:
                names = sorted(entry.name for entry in entries)
            for name in names:
                child = posixpath.join(current, name) if current else name
                child_real = self.real(child, child)
                if child_real.is_dir():
                    pending.append(child)
                elif child_real.is_file():
                    found.append(child)
        return sorted(found)

    @contextlib.contextmanager
    def confined(self, inputs: Iterable[str]) -> Iterator[ExportTree]:
        """A tree holding only ``inputs`` (hard links, as regular files), removed afterwards.

        A renderer run on it can read nothing but the files the render cache key
        covers: a file the static walk missed makes the render fail instead of
        being read unhashed.
        """
        parent = self.root.parent if os.access(self.root.parent, os.W_OK) else None
        scratch = Path(tempfile.mkdtemp(prefix=".render-", dir=parent))
        try:
            for rel in sorted(set(inputs)):
                source = self.real(rel, rel)
                target = scratch.joinpath(*rel.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
            yield ExportTree(scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

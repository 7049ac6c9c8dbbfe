"""Local git operations: resolve refs, read blobs, list changes, export a revision.

Everything here reads from the object database at an exact SHA, never from a
working tree, so what Sluice renders is exactly what was committed.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT_S = 120


class GitError(RuntimeError):
    """A git command failed; the message carries git's own explanation."""


@dataclass(frozen=True)
class TreeEntry:
    mode: str
    kind: str  # "blob" or "commit" (submodule)
    oid: str
    path: str

    @property
    def is_symlink(self) -> bool:
        return self.mode == "120000"


class Git:
    """A thin, typed wrapper around the git CLI for one repository."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def run(self, *args: str, input: bytes | None = None, check: bool = True) -> bytes:
        env = {
            **os.environ,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "LC_ALL": "C",
        }
        try:
            proc = subprocess.run(
                ["git", "-C", str(self.path), *args],
                input=input,
                capture_output=True,
                env=env,
                timeout=GIT_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} timed out after {GIT_TIMEOUT_S}s") from None
        if check and proc.returncode != 0:
            message = proc.stderr.decode(errors="replace").strip().splitlines()
            raise GitError(f"git {args[0]} failed: {message[-1] if message else proc.returncode}")
        return proc.stdout

    def resolve(self, ref: str) -> str:
        """The full commit SHA that ``ref`` names."""
        if ref.startswith("-"):
            raise GitError(f"not a revision: {ref!r}")
        out = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        sha = out.decode().strip()
        if not sha:
            raise GitError(f"unknown revision {ref!r} in {self.path}")
        return sha

    def read_file(self, sha: str, path: str) -> bytes | None:
        """The blob at ``path`` in commit ``sha``, or None if there is none."""
        try:
            return self.run("cat-file", "blob", f"{sha}:{path}")
        except GitError:
            return None

    def exists(self, sha: str, path: str) -> bool:
        out = self.run("cat-file", "-t", f"{sha}:{path}", check=False)
        return out.strip() == b"blob"

    def tree(self, sha: str, path: str = "") -> list[TreeEntry]:
        """Every file (recursively) under ``path`` at ``sha``."""
        args = ["ls-tree", "-r", "-z", "--full-tree", sha]
        if path:
            args += ["--", path]
        entries = []
        for record in self.run(*args).split(b"\0"):
            if not record:
                continue
            meta, _, name = record.partition(b"\t")
            mode, kind, oid = meta.decode().split(" ")
            entries.append(TreeEntry(mode, kind, oid, name.decode(errors="surrogateescape")))
        return entries

    def changed_files(self, base: str, head: str) -> list[str]:
        """Paths changed between the merge base of ``base`` and ``head``, and ``head``.

        Renames are reported as a delete plus an add, so both paths count.
        """
        out = self.run("diff", "--name-only", "-z", "--no-renames", f"{base}...{head}")
        return sorted({p.decode(errors="surrogateescape") for p in out.split(b"\0") if p})

    def rev_list(self, base: str, head: str) -> list[str]:
        """Commits reachable from ``head`` but not ``base``, oldest first."""
        out = self.run("rev-list", "--reverse", f"{base}..{head}")
        return out.decode().split()

    def merge_base(self, base: str, head: str) -> str | None:
        out = self.run("merge-base", base, head, check=False).decode().strip()
        return out or None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        proc = subprocess.run(
            ["git", "-C", str(self.path), "merge-base", "--is-ancestor", ancestor, descendant],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
        )
        return proc.returncode == 0

    def export(self, sha: str, dest: str | os.PathLike[str]) -> Path:
        """Write the tree of ``sha`` into ``dest`` (which must not exist) via ``git archive``.

        Symlinks are kept as they are; whoever reads the export must confine
        itself (see ``bot.render``). Member paths cannot escape ``dest``.
        """
        dest = Path(dest)
        archive = self.run("archive", "--format=tar", sha)
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
        try:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(tmp, filter="tar")
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest


class ExportCache:
    """Exports of commits kept on disk by SHA; a commit's tree never changes."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def get(self, git: Git, sha: str) -> Path:
        dest = self.root / sha
        if dest.is_dir():
            return dest
        try:
            return git.export(sha, dest)
        except OSError:
            # Another process exported the same SHA concurrently and won the rename.
            if dest.is_dir():
                return dest
            raise

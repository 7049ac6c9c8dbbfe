"""Local git operations: resolve refs, read blobs, list changes, export a revision.

Everything here reads from the object database at an exact SHA, never from a
working tree, so what Sluice renders is exactly what was committed.
"""

from __future__ import annotations

import base64
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

    def blobs(self, oids: list[str]) -> list[bytes]:
        """The contents of many blobs through one ``git cat-file --batch``."""
        if not oids:
            return []
        out = self.run("cat-file", "--batch", input="".join(f"{o}\n" for o in oids).encode())
        contents, offset = [], 0
        for oid in oids:
            end = out.index(b"\n", offset)
            header = out[offset:end].split(b" ")
            if len(header) != 3:
                raise GitError(f"blob {oid} is missing from the repository")
            size = int(header[2])
            contents.append(out[end + 1 : end + 1 + size])
            offset = end + 1 + size + 1
        return contents

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

    def get(self, git: Git, sha: str, *, like: str | None = None) -> Path:
        """The export of ``sha``; derived from the export of ``like`` when that exists.

        Deriving hard-links the files ``like`` shares with ``sha`` and writes only
        what differs, which for a pull request's head is a handful of files
        instead of the whole tree. Exports are never written in place, so the
        shared links stay correct.
        """
        dest = self.root / sha
        if dest.is_dir():
            return dest
        source = self.root / like if like else None
        try:
            if source is not None and like is not None and source.is_dir():
                return _derive_export(git, source, like, sha, dest)
            return git.export(sha, dest)
        except OSError:
            # Another process exported the same SHA concurrently and won the rename.
            if dest.is_dir():
                return dest
            raise


def _derive_export(git: Git, source: Path, source_sha: str, sha: str, dest: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent)) / "tree"
    try:
        shutil.copytree(source, tmp, symlinks=True, copy_function=os.link)
        changes = _tree_changes(git, source_sha, sha)
        for path, _mode, _oid in changes:
            _remove(tmp, path)
        written = [(path, mode, oid) for path, mode, oid in changes if oid is not None]
        for (path, mode, _oid), content in zip(
            written, git.blobs([oid for _, _, oid in written]), strict=True
        ):
            _write_entry(tmp, path, mode, content)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return dest


def _tree_changes(git: Git, old: str, new: str) -> list[tuple[str, str, str | None]]:
    """(path, new mode, new blob id or None when deleted) for every file that differs."""
    out = git.run("diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", old, new)
    fields = out.split(b"\0")
    changes = []
    for meta, raw_path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta:
            continue
        _old_mode, new_mode, _old_oid, new_oid, status = meta.decode().lstrip(":").split(" ")
        path = raw_path.decode(errors="surrogateescape")
        changes.append((path, new_mode, None if status == "D" else new_oid))
    return changes


def _contained(root: Path, path: str) -> Path:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..", ".git") for p in parts):
        raise GitError(f"refusing unsafe path in tree: {path!r}")
    target = root.joinpath(*parts)
    parent = os.path.realpath(target.parent)
    if parent != str(root) and not parent.startswith(str(root) + os.sep):
        raise GitError(f"refusing path through a symlink in tree: {path!r}")
    return target


def _remove(root: Path, path: str) -> None:
    target = _contained(root, path)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    # git has no empty directories: drop the ones this removal emptied.
    parent = target.parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _write_entry(root: Path, path: str, mode: str, content: bytes) -> None:
    if mode == "160000":
        return  # a submodule: git archive leaves an empty directory, so do we
    target = _contained(root, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)  # a directory in the old tree is a file in the new one
    if mode == "120000":
        os.symlink(content.decode(errors="surrogateescape"), target)
    else:
        target.write_bytes(content)
        if mode == "100755":
            target.chmod(0o755)


class Mirrors:
    """Bare mirrors of remote repositories, one per repo, fetched on demand.

    Credentials travel in an ``http.extraHeader`` passed through the
    environment, so they never appear in a command line, a remote URL or a log.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        return self.root / f"{safe}.git"

    def fetch(
        self,
        key: str,
        url: str,
        wants: list[str],
        *,
        auth: tuple[str, str] | None = None,
    ) -> Git:
        """Make sure every ref or SHA in ``wants`` is present in the mirror for ``key``."""
        path = self.path_for(key)
        if not path.exists():
            tmp = Path(tempfile.mkdtemp(prefix=".mirror-", dir=self.root))
            Git(tmp).run("init", "--bare", "-q")
            try:
                os.replace(tmp, path)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # a concurrent fetch created it first
        git = Git(path)
        missing = [w for w in wants if not _has_commit(git, w)]
        if missing:
            refspecs = [w if _looks_like_sha(w) else f"+{w}:{w}" for w in missing]
            _fetch(git, url, refspecs, auth)
        return git


def _looks_like_sha(value: str) -> bool:
    return len(value) in (40, 64) and all(c in "0123456789abcdef" for c in value)


def _has_commit(git: Git, want: str) -> bool:
    if not _looks_like_sha(want):
        return False
    out = git.run("cat-file", "-t", want, check=False)
    return out.strip() == b"commit"


def remote_env(auth: tuple[str, str] | None) -> dict[str, str]:
    """The environment for a git command that talks to a remote with ``auth``.

    The credentials travel as an ``http.extraHeader`` in the environment, so they
    never appear in a command line, a remote URL or git's output.
    """
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {token}",
            }
        )
    return env


def _fetch(git: Git, url: str, refspecs: list[str], auth: tuple[str, str] | None) -> None:
    env = remote_env(auth)
    try:
        proc = subprocess.run(
            ["git", "-C", str(git.path), "fetch", "--quiet", "--no-tags", url, *refspecs],
            capture_output=True,
            env=env,
            timeout=GIT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git fetch timed out after {GIT_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        # git never prints the extra header, but the URL may carry userinfo: drop it.
        detail = lines[-1] if lines else str(proc.returncode)
        raise GitError(f"git fetch failed: {_strip_userinfo(detail, url)}")


def _strip_userinfo(text: str, url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        userinfo, _, host = rest.partition("@")
        text = text.replace(url, f"{scheme}://{host}").replace(userinfo, "***")
    return text

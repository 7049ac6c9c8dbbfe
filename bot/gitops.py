"""Local git operations: resolve refs, read blobs, list changes, export a revision.

Everything here reads from the object database at an exact SHA, never from a
working tree, so what Sluice renders is exactly what was committed.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
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
        return self._rev_parse(ref, "commit")

    def tree_id(self, sha: str) -> str:
        """The id of the tree commit ``sha`` holds: what an export of it contains."""
        return self._rev_parse(sha, "tree")

    def _rev_parse(self, ref: str, kind: str) -> str:
        if ref.startswith("-"):
            raise GitError(f"not a revision: {ref!r}")
        out = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{{kind}}}", check=False)
        oid = out.decode().strip()
        if not oid:
            raise GitError(f"unknown revision {ref!r} in {self.path}")
        return oid

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
        """Write the tree of ``sha`` into ``dest`` (which must not exist); see :func:`export_tree`."""
        export_tree(self, sha, Path(dest))
        return Path(dest)


def export_tree(git: Git, sha: str, dest: Path, *, like: tuple[str, Path] | None = None) -> int:
    """THE export: the committed blobs of ``sha`` written into ``dest``, byte for byte.

    Every renderer input in Sluice (preview, merge gate, ``sluice render``, the
    puller) comes from here. Unlike ``git archive`` nothing in ``.gitattributes``
    applies: no ``export-subst``, no ``export-ignore``, no eol conversion or
    filters, so what is previewed is what deploys. Blobs stream from one
    ``git cat-file --batch`` straight to disk. With ``like`` (the SHA and path of
    an existing export) unchanged files are hard-linked from it and only the
    difference is written. Symlinks are written as symlinks (readers confine
    themselves, see ``bot.render``); submodules are left out. ``dest`` (which
    must not exist) appears atomically. Returns the bytes the export holds.
    """
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent)) / "tree"
    try:
        if like is not None:
            shutil.copytree(like[1], tmp, symlinks=True, copy_function=os.link)
            changes = _tree_changes(git, like[0], sha)
            for path, _mode, _oid in changes:
                _remove(tmp, path)
            entries = [TreeEntry(mode, "blob", oid, path) for path, mode, oid in changes if oid]
        else:
            tmp.mkdir()
            entries = git.tree(sha)
        # Submodules are left out: their content is not in this repository.
        entries = [e for e in entries if e.kind == "blob" and e.mode != "160000"]
        with _BlobStream(git, [e.oid for e in entries]) as blobs:
            for entry in entries:
                _write_entry(tmp, entry, blobs)
        size = _tree_bytes(tmp)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return size


class _BlobStream:
    """One ``git cat-file --batch`` fed ``oids`` up front by a thread (no round trip per
    blob); the blobs are then read in that order, each in chunks, never held whole."""

    CHUNK = 1 << 20

    def __init__(self, git: Git, oids: list[str]) -> None:
        self._proc = subprocess.Popen(
            ["git", "-C", str(git.path), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"},
        )
        self._feeder = threading.Thread(
            target=self._feed, args=("".join(f"{o}\n" for o in oids).encode(),), daemon=True
        )
        self._feeder.start()

    def _feed(self, requests: bytes) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError, ValueError):  # the reader gave up first
            stdin.write(requests)
            stdin.close()

    def __enter__(self) -> _BlobStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        try:
            self._proc.wait(timeout=GIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._feeder.join()

    def copy(self, oid: str, write: Callable[[bytes], object]) -> None:
        """The next blob, which must be ``oid``, passed to ``write`` chunk by chunk."""
        stdout = self._proc.stdout
        assert stdout is not None
        header = stdout.readline().split()
        if len(header) != 3 or header[0].decode() != oid or header[1] != b"blob":
            raise GitError(f"blob {oid} is missing from the repository")
        remaining = int(header[2])
        while remaining:
            chunk = stdout.read(min(remaining, self.CHUNK))
            if not chunk:
                raise GitError(f"git cat-file stopped in the middle of blob {oid}")
            write(chunk)
            remaining -= len(chunk)
        stdout.read(1)  # the newline after each object

    def read(self, oid: str) -> bytes:
        parts: list[bytes] = []
        self.copy(oid, parts.append)
        return b"".join(parts)


def _tree_bytes(root: Path) -> int:
    return sum(
        os.lstat(os.path.join(directory, name)).st_size
        for directory, _dirs, files in os.walk(root)
        for name in files
    )


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


def _write_entry(root: Path, entry: TreeEntry, blobs: _BlobStream) -> None:
    target = _contained(root, entry.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)  # a directory in the old tree is a file in the new one
    if entry.is_symlink:
        os.symlink(blobs.read(entry.oid).decode(errors="surrogateescape"), target)
        return
    with open(target, "xb") as handle:
        blobs.copy(entry.oid, handle.write)
    if entry.mode == "100755":
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


def git_error_line(proc: subprocess.CompletedProcess[bytes], url: str = "") -> str:
    """The last line git wrote to stderr, for an error message; any credentials embedded
    in ``url`` (``https://user:token@host/...``) never appear in it."""
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    text = lines[-1] if lines else f"exit status {proc.returncode}"
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        userinfo, _, host = rest.partition("@")
        text = text.replace(url, f"{scheme}://{host}").replace(userinfo, "***")
    return text


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

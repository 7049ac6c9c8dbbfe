"""The ledger branch: reading entries, writing and pushing commits the bot signs."""

from __future__ import annotations

import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from bot.config.signing import DEFAULT_LEDGER_BRANCH as DEFAULT_BRANCH
from bot.config.signing import SigningConfig
from bot.deploy.ledger.entry import (
    LedgerEntry,
    entries_written_by,
    entry_path,
    read_entry,
)
from bot.errors import LedgerError
from bot.gitops import GIT_TIMEOUT_S, Git, GitError, git_error_line, remote_env

_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_CAS_ATTEMPTS = 10
_PUSH_ATTEMPTS = 5
_REMOTE_REF = "refs/sluice/remote-ledger"


class BotSigner:
    """Turns a :class:`SigningConfig` into the git options that sign a commit."""

    def __init__(self, config: SigningConfig) -> None:
        if config.method == "ssh":
            if not Path(config.key).is_file():
                raise LedgerError(f"ssh signing key {config.key} is not a readable file")
        elif config.gnupg_home is None or not config.gnupg_home.is_dir():
            raise LedgerError(f"gnupg home {config.gnupg_home} is not a directory")
        self.config = config

    def git_options(self) -> list[str]:
        """``git -c`` options; they name a key file or fingerprint, never key material."""
        fmt = "openpgp" if self.config.method == "gpg" else "ssh"
        key = self.config.key
        if self.config.method == "ssh":
            key = str(Path(key).resolve())
        return ["-c", f"gpg.format={fmt}", "-c", f"user.signingKey={key}"]

    def environment(self) -> dict[str, str]:
        env = {
            "GIT_AUTHOR_NAME": self.config.name,
            "GIT_AUTHOR_EMAIL": self.config.email,
            "GIT_COMMITTER_NAME": self.config.name,
            "GIT_COMMITTER_EMAIL": self.config.email,
        }
        if self.config.gnupg_home is not None:
            env["GNUPGHOME"] = str(self.config.gnupg_home)
        return env


# --- writing and reading


class Ledger:
    """The ledger branch of one local repository (bare mirrors are fine)."""

    def __init__(self, git: Git, branch: str = DEFAULT_BRANCH) -> None:
        if not _BRANCH.match(branch) or ".." in branch or branch.endswith((".lock", "/")):
            raise LedgerError(f"not a valid ledger branch name: {branch!r}")
        self.git = git
        self.branch = branch

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def tip(self) -> str | None:
        """The ledger branch's commit, or None when the branch does not exist yet."""
        out = self.git.run(
            "rev-parse", "--verify", "--quiet", f"{self.ref}^{{commit}}", check=False
        )
        return out.decode().strip() or None

    def read(self, app: str, at: str | None = None) -> LedgerEntry | None:
        """The entry for ``app`` at the branch tip (or at ledger commit ``at``)."""
        commit = at or self.tip()
        if commit is None:
            return None
        return read_entry(self.git, commit, app)

    def history(self, app: str, limit: int = 20) -> list[tuple[str, LedgerEntry]]:
        """Ledger commits that wrote ``app``'s entry, newest first, with the entry each wrote."""
        if limit < 1 or self.tip() is None:
            return []
        out = self.git.run(
            "log", "--format=%H", f"-n{limit}", self.ref, "--", entry_path(app)
        ).decode()
        result = []
        for sha in out.split():
            entry = read_entry(self.git, sha, app)
            if entry is not None:
                result.append((sha, entry))
        return result

    def record(self, entries: list[LedgerEntry], signer: BotSigner, message: str) -> str:
        """Write ``entries`` as ONE signed commit on the ledger tip; return its SHA.

        ``previous`` is set from the ledger itself (the revision it named for the
        app just before this commit), so it stays true when writers race.
        """
        _check_batch(entries, message)
        for _ in range(_CAS_ATTEMPTS):
            old = self.tip()
            sha = self._commit(entries, old, signer, message)
            if self._compare_and_swap(sha, old):
                return sha
            _backoff()
        raise LedgerError(
            f"ledger branch {self.branch} kept moving; gave up after {_CAS_ATTEMPTS} attempts"
        )

    def push(
        self,
        remote_url: str,
        auth: tuple[str, str] | None = None,
        *,
        signer: BotSigner | None = None,
    ) -> None:
        """Push the ledger branch; if the remote moved on, re-record ours on top and retry.

        ``auth`` (user, token) travels as an ``http.extraHeader`` in the environment,
        never on the command line. Re-recording needs ``signer``.
        """
        if self.tip() is None:
            raise LedgerError(f"nothing to push: ledger branch {self.branch} does not exist")
        for _ in range(_PUSH_ATTEMPTS):
            rejected = self._push_once(remote_url, auth)
            if not rejected:
                return
            if signer is None:
                raise LedgerError(
                    f"the remote ledger branch {self.branch} moved on; a signer is needed to "
                    "re-record the local entries on top of it"
                )
            self._rebase_onto_remote(remote_url, auth, signer)
        raise LedgerError(f"push of {self.branch} kept being rejected after {_PUSH_ATTEMPTS} tries")

    # -- internals

    def _commit(
        self, entries: list[LedgerEntry], parent: str | None, signer: BotSigner, message: str
    ) -> str:
        written = []
        for entry in entries:
            before = read_entry(self.git, parent, entry.app) if parent else None
            written.append(replace(entry, previous=before.revision if before else None))
        with tempfile.TemporaryDirectory(prefix="sluice-ledger-") as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            if parent:
                _run(self.git, ["read-tree", parent], env=env)
            for entry in written:
                blob = _run(
                    self.git, ["hash-object", "-w", "--stdin"], input=entry.to_yaml().encode()
                )
                _run(
                    self.git,
                    ["update-index", "--add", "--cacheinfo", f"100644,{blob},{entry.path}"],
                    env=env,
                )
            tree = _run(self.git, ["write-tree"], env=env)
        args = [*signer.git_options(), "commit-tree", tree, "-S", "-F", "-"]
        if parent:
            args[-3:-3] = ["-p", parent]
        try:
            return _run(
                self.git,
                args,
                env={**signer.environment(), "GIT_CONFIG_NOSYSTEM": "1"},
                input=message.encode(),
            )
        except GitError as exc:
            raise LedgerError(
                f"cannot sign the ledger commit ({signer.config.method}): {exc}"
            ) from None

    def _compare_and_swap(self, new: str, old: str | None) -> bool:
        try:
            _run(self.git, ["update-ref", "-m", "sluice ledger", self.ref, new, old or ""])
        except GitError:
            if self.tip() == old:  # not a lost race: something else is wrong
                raise
            return False
        return True

    def _push_once(self, remote_url: str, auth: tuple[str, str] | None) -> bool:
        """Push; True when the remote rejected it because it moved on."""
        proc = _remote_git(
            self.git, ["push", "--porcelain", remote_url, f"{self.ref}:{self.ref}"], auth
        )
        if proc.returncode == 0:
            return False
        report = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        if re.search(r"\[rejected\]|\[remote rejected\].*(lock|failed to update)", report):
            return True
        raise LedgerError(f"git push failed: {git_error_line(proc, remote_url)}")

    def _fetch_remote_tip(self, remote_url: str, auth: tuple[str, str] | None) -> str:
        refspec = f"+{self.ref}:{_REMOTE_REF}/{self.branch}"
        proc = _remote_git(self.git, ["fetch", "--quiet", "--no-tags", remote_url, refspec], auth)
        if proc.returncode != 0:
            raise LedgerError(
                f"git fetch of the remote ledger failed: {git_error_line(proc, remote_url)}"
            )
        return self.git.resolve(f"{_REMOTE_REF}/{self.branch}")

    def _rebase_onto_remote(
        self, remote_url: str, auth: tuple[str, str] | None, signer: BotSigner
    ) -> None:
        remote = self._fetch_remote_tip(remote_url, auth)
        local = self.tip()
        assert local is not None
        if self.git.is_ancestor(local, remote):
            self._compare_and_swap(remote, local)  # ours are already there: fast-forward
            return
        if self.git.is_ancestor(remote, local):
            return  # the remote moved back to where we are; just push again
        new = remote
        for sha in self.git.rev_list(remote, local):
            entries = entries_written_by(self.git, sha)
            if entries:
                new = self._commit(entries, new, signer, _message_of(self.git, sha))
        # One swap for the whole chain: a crash or race in between loses nothing.
        self._compare_and_swap(new, local)


def _check_batch(entries: list[LedgerEntry], message: str) -> None:
    if not entries:
        raise LedgerError("a ledger commit needs at least one entry")
    apps = [e.app for e in entries]
    if len(set(apps)) != len(apps):
        raise LedgerError("a ledger commit can hold only one entry per app")
    for entry in entries:
        entry.validate()
    if not message.strip():
        raise LedgerError("a ledger commit needs a message")


def _message_of(git: Git, sha: str) -> str:
    return git.run("log", "-1", "--format=%B", sha).decode(errors="replace").strip() or "ledger"


def _backoff() -> None:
    time.sleep(random.uniform(0.005, 0.05))


# --- running git


def _run(
    git: Git, args: list[str], *, env: Mapping[str, str] | None = None, input: bytes | None = None
) -> str:
    """``git args`` in ``git``'s repository with extra environment; stripped stdout."""
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
    try:
        proc = subprocess.run(
            ["git", "-C", str(git.path), *args],
            input=input,
            capture_output=True,
            env=full_env,
            timeout=GIT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {_verb(args)} timed out after {GIT_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {_verb(args)} failed: {lines[-1] if lines else proc.returncode}")
    return proc.stdout.decode().strip()


def _verb(args: list[str]) -> str:
    return next((a for a in args if not a.startswith("-") and "=" not in a), "?")


def _remote_git(
    git: Git, args: list[str], auth: tuple[str, str] | None
) -> subprocess.CompletedProcess[bytes]:
    env = remote_env(auth)
    try:
        return subprocess.run(
            ["git", "-C", str(git.path), *args],
            capture_output=True,
            env=env,
            timeout=GIT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise LedgerError(f"git {args[0]} timed out after {GIT_TIMEOUT_S}s") from None

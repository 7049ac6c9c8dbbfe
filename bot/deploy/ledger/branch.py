"""The ledger branch: reading entries, writing signed commits, pushing, verifying the tip."""

from __future__ import annotations

import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from bot.config.signing import DEFAULT_LEDGER_BRANCH as DEFAULT_BRANCH
from bot.config.signing import SigningConfig
from bot.errors import LedgerError
from bot.gitops import GIT_TIMEOUT_S, Git, GitError, remote_env
from bot.models import ANY_APP_NAME, CommitCheck
from bot.signatures import SignatureVerifier, TrustedKeys

APPS_DIR = "apps"
Action = Literal["deploy", "rollback", "preview-deploy"]
ACTIONS: tuple[str, ...] = get_args(Action)

# App names in .sluice.yaml, or discovered ones (argocd:<name>, flux:<namespace>/<name>).
_APP_NAME = ANY_APP_NAME
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_FIELDS = (
    "app", "revision", "previous", "action", "pr", "pr_url", "approved_by", "gates", "at", "actor",
)  # fmt: skip
_MAX_ENTRY_BYTES = 64 * 1024
_CAS_ATTEMPTS = 10
_PUSH_ATTEMPTS = 5
_REMOTE_REF = "refs/sluice/remote-ledger"


def utc_now() -> str:
    """The current time as the ledger writes it: ISO-8601, UTC, seconds, ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LedgerEntry:
    """One app's approved state as one ledger commit recorded it."""

    app: str
    revision: str
    previous: str | None = None
    action: Action = "deploy"
    pr: int | None = None
    pr_url: str | None = None
    approved_by: list[str] = field(default_factory=list)
    gates: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=utc_now)
    actor: str = "sluice"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "ledger entry") -> None:
        """Raise :class:`LedgerError` naming the first field that is wrong."""
        if not isinstance(self.app, str) or not _APP_NAME.match(self.app):
            raise LedgerError(f"{where}: app: must be a lowercase DNS-style app name")
        where = f"{where} for {self.app!r}"
        _check_sha(self.revision, f"{where}: revision")
        if self.previous is not None:
            _check_sha(self.previous, f"{where}: previous")
        if self.action not in ACTIONS:
            raise LedgerError(f"{where}: action: must be one of {', '.join(ACTIONS)}")
        if self.pr is not None and (
            not isinstance(self.pr, int) or isinstance(self.pr, bool) or self.pr < 1
        ):
            raise LedgerError(f"{where}: pr: must be a positive integer or null")
        if self.pr_url is not None and (
            not isinstance(self.pr_url, str) or not self.pr_url.startswith(("https://", "http://"))
        ):
            raise LedgerError(f"{where}: pr_url: must be an http(s) URL or null")
        if not isinstance(self.approved_by, list) or not all(
            isinstance(name, str) and name.strip() for name in self.approved_by
        ):
            raise LedgerError(f"{where}: approved_by: must be a list of user names")
        if not isinstance(self.gates, dict) or not all(isinstance(k, str) for k in self.gates):
            raise LedgerError(f"{where}: gates: must be a mapping of gate name to result")
        _check_utc_time(self.at, f"{where}: at")
        if not isinstance(self.actor, str) or not self.actor.strip():
            raise LedgerError(f"{where}: actor: must be a non-empty string")

    @property
    def path(self) -> str:
        return f"{APPS_DIR}/{self.app}.yaml"

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "revision": self.revision,
            "previous": self.previous,
            "action": self.action,
            "pr": self.pr,
            "pr_url": self.pr_url,
            "approved_by": list(self.approved_by),
            "gates": dict(self.gates),
            "at": self.at,
            "actor": self.actor,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @classmethod
    def from_yaml(cls, text: str | bytes, source: str = "ledger entry") -> LedgerEntry:
        """Parse and validate one ``apps/<app>.yaml``; unknown or missing keys are errors."""
        if len(text) > _MAX_ENTRY_BYTES:
            raise LedgerError(f"{source}: larger than {_MAX_ENTRY_BYTES} bytes")
        try:
            raw = yaml.load(text, Loader=yaml.CSafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise LedgerError(f"{source}: not valid YAML{where}") from None
        if not isinstance(raw, dict):
            raise LedgerError(f"{source}: must be a mapping")
        unknown = sorted(str(k) for k in raw if k not in _FIELDS)
        if unknown:
            raise LedgerError(f"{source}: unknown keys: {', '.join(unknown)}")
        missing = [k for k in ("app", "revision", "action", "at") if k not in raw]
        if missing:
            raise LedgerError(f"{source}: missing keys: {', '.join(missing)}")
        # YAML reads an unquoted timestamp as a datetime; the ledger writes strings.
        at = raw["at"]
        if isinstance(at, datetime):
            raise LedgerError(f"{source}: at: must be a quoted ISO-8601 string")
        entry = cls.__new__(cls)
        entry.app = raw["app"]
        entry.revision = raw["revision"]
        entry.previous = raw.get("previous")
        entry.action = raw["action"]
        entry.pr = raw.get("pr")
        entry.pr_url = raw.get("pr_url")
        entry.approved_by = raw.get("approved_by") if "approved_by" in raw else []
        entry.gates = raw.get("gates") if "gates" in raw else {}
        entry.at = at
        entry.actor = raw.get("actor", "sluice")
        entry.validate(source)
        return entry


def _check_sha(value: Any, where: str) -> None:
    if not isinstance(value, str) or not _SHA.match(value):
        raise LedgerError(f"{where}: must be a full lowercase commit SHA")


def _check_utc_time(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise LedgerError(f"{where}: must be an ISO-8601 UTC time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise LedgerError(f"{where}: {value!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None or parsed.utcoffset() != UTC.utcoffset(None):
        raise LedgerError(f"{where}: {value!r} must be in UTC ('Z' or '+00:00')")


# --- signing


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
        return _read_entry(self.git, commit, app)

    def history(self, app: str, limit: int = 20) -> list[tuple[str, LedgerEntry]]:
        """Ledger commits that wrote ``app``'s entry, newest first, with the entry each wrote."""
        if limit < 1 or self.tip() is None:
            return []
        out = self.git.run(
            "log", "--format=%H", f"-n{limit}", self.ref, "--", _entry_path(app)
        ).decode()
        result = []
        for sha in out.split():
            entry = _read_entry(self.git, sha, app)
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
            before = _read_entry(self.git, parent, entry.app) if parent else None
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
        raise LedgerError(f"git push failed: {_last_line(proc, remote_url)}")

    def _fetch_remote_tip(self, remote_url: str, auth: tuple[str, str] | None) -> str:
        refspec = f"+{self.ref}:{_REMOTE_REF}/{self.branch}"
        proc = _remote_git(self.git, ["fetch", "--quiet", "--no-tags", remote_url, refspec], auth)
        if proc.returncode != 0:
            raise LedgerError(
                f"git fetch of the remote ledger failed: {_last_line(proc, remote_url)}"
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
            entries = _entries_written_by(self.git, sha)
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


def _entry_path(app: str) -> str:
    if not isinstance(app, str) or not _APP_NAME.match(app):
        raise LedgerError(f"not a valid app name: {app!r}")
    return f"{APPS_DIR}/{app}.yaml"


def _read_entry(git: Git, commit: str, app: str) -> LedgerEntry | None:
    path = _entry_path(app)
    blob = git.read_file(commit, path)
    if blob is None:
        return None
    entry = LedgerEntry.from_yaml(blob, f"{path} at ledger commit {commit[:12]}")
    if entry.app != app:
        raise LedgerError(f"{path} at ledger commit {commit[:12]} names app {entry.app!r}")
    return entry


def _entries_written_by(git: Git, sha: str) -> list[LedgerEntry]:
    out = git.run("diff-tree", "--no-commit-id", "-r", "--root", "--name-only", "-z", sha)
    entries = []
    for path in out.decode(errors="replace").split("\0"):
        match = re.fullmatch(rf"{APPS_DIR}/(.+)\.yaml", path)
        if match:
            entry = _read_entry(git, sha, match.group(1))
            if entry is not None:
                entries.append(entry)
    return entries


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


def _last_line(proc: subprocess.CompletedProcess[bytes], url: str) -> str:
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    text = lines[-1] if lines else f"exit status {proc.returncode}"
    if "@" in url and "://" in url:  # never echo credentials embedded in a URL
        scheme, rest = url.split("://", 1)
        userinfo, _, host = rest.partition("@")
        text = text.replace(url, f"{scheme}://{host}").replace(userinfo, "***")
    return text


# --- verifying (the puller's side)


@dataclass(frozen=True)
class VerifiedLedger:
    """A ledger tip whose signature was checked against the trusted bot keys."""

    git: Git
    branch: str
    tip: str
    check: CommitCheck
    keys: TrustedKeys = field(repr=False)

    def entry(self, app: str) -> LedgerEntry | None:
        return _read_entry(self.git, self.tip, app)

    def approved_revision(
        self, app: str, tracked_branch: str, *, allow_preview_deploy: bool = False
    ) -> LedgerEntry:
        """The entry for ``app`` if the puller may deploy it, else :class:`LedgerError`.

        The commit that last wrote the entry must itself carry a trusted bot
        signature (a signed tip on top of a forged entry is not enough), and the
        revision must be reachable from ``tracked_branch``, except for a
        ``preview-deploy`` of an app that allows it (``allow_preview_deploy``): that
        revision is an open pull request's head, which no tracked branch holds yet.
        """
        entry = self.entry(app)
        if entry is None:
            raise LedgerError(f"the ledger at {self.tip[:12]} has no entry for app {app!r}")
        preview = entry.action == "preview-deploy"
        if preview and not allow_preview_deploy:
            raise LedgerError(
                f"app {app!r}: the ledger entry is a preview-deploy, which this app does not allow"
            )
        writer = self.git.run("log", "-1", "--format=%H", self.tip, "--", entry.path)
        writer_sha = writer.decode().strip()
        if writer_sha != self.tip:
            _require_trusted(self.git, self.keys, writer_sha, f"ledger entry for {app!r}")
        if self.git.run("cat-file", "-t", entry.revision, check=False).strip() != b"commit":
            raise LedgerError(
                f"app {app!r}: approved revision {entry.revision[:12]} is not in the repository"
            )
        try:
            tracked = self.git.resolve(tracked_branch)
        except GitError as exc:
            raise LedgerError(f"tracked branch: {exc}") from None
        if not preview and not self.git.is_ancestor(entry.revision, tracked):
            raise LedgerError(
                f"app {app!r}: revision {entry.revision[:12]} is not reachable from "
                f"{tracked_branch} ({tracked[:12]}); refusing to deploy it"
            )
        return entry


def verify_tip(
    git: Git,
    trusted: TrustedKeys,
    branch: str = DEFAULT_BRANCH,
    *,
    not_before: str | None = None,
) -> VerifiedLedger:
    """Check that the ledger tip is signed by a trusted bot key.

    With ``not_before`` (the last ledger commit the caller acted on) the tip must
    descend from it, so a ledger rewound to an older signed commit is refused.
    """
    ledger = Ledger(git, branch)
    tip = ledger.tip()
    if tip is None:
        raise LedgerError(f"ledger branch {branch} does not exist")
    if not_before is not None and not git.is_ancestor(not_before, tip):
        raise LedgerError(
            f"ledger branch {branch} at {tip[:12]} does not descend from {not_before[:12]}, "
            "the last ledger commit acted on: it was rewound or rewritten"
        )
    check = _require_trusted(git, trusted, tip, f"ledger tip of {branch}")
    return VerifiedLedger(git=git, branch=branch, tip=tip, check=check, keys=trusted)


def _require_trusted(git: Git, keys: TrustedKeys, sha: str, what: str) -> CommitCheck:
    with SignatureVerifier(keys) as verifier:
        check = verifier.check_commit(git, sha)
    if check.status != "valid":
        detail = f": {check.detail}" if check.detail else ""
        raise LedgerError(
            f"{what} ({sha[:12]}) is {check.status}, not signed by a trusted bot key{detail}"
        )
    return check

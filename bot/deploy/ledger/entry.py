"""The ledger's format: one YAML entry per app under ``apps/``, validated on write and read."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import yaml

from bot.errors import LedgerError
from bot.gitops import Git
from bot.models import ANY_APP_NAME

APPS_DIR = "apps"
Action = Literal["deploy", "rollback", "preview-deploy"]
ACTIONS: tuple[str, ...] = get_args(Action)

# App names in .sluice.yaml, or discovered ones (argocd:<name>, flux:<namespace>/<name>).
_APP_NAME = ANY_APP_NAME
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_FIELDS = (
    "app", "revision", "previous", "action", "pr", "pr_url", "approved_by", "gates", "at", "actor",
)  # fmt: skip
_MAX_ENTRY_BYTES = 64 * 1024


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


def entry_path(app: str) -> str:
    if not isinstance(app, str) or not _APP_NAME.match(app):
        raise LedgerError(f"not a valid app name: {app!r}")
    return f"{APPS_DIR}/{app}.yaml"


def read_entry(git: Git, commit: str, app: str) -> LedgerEntry | None:
    path = entry_path(app)
    blob = git.read_file(commit, path)
    if blob is None:
        return None
    entry = LedgerEntry.from_yaml(blob, f"{path} at ledger commit {commit[:12]}")
    if entry.app != app:
        raise LedgerError(f"{path} at ledger commit {commit[:12]} names app {entry.app!r}")
    return entry


def entries_written_by(git: Git, sha: str) -> list[LedgerEntry]:
    out = git.run("diff-tree", "--no-commit-id", "-r", "--root", "--name-only", "-z", sha)
    entries = []
    for path in out.decode(errors="replace").split("\0"):
        match = re.fullmatch(rf"{APPS_DIR}/(.+)\.yaml", path)
        if match:
            entry = read_entry(git, sha, match.group(1))
            if entry is not None:
                entries.append(entry)
    return entries

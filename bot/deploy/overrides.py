"""Policy overrides: a policy owner's ``/approve-policy`` for one head and one set of denials.

An override is bound to the PR's head SHA and to a fingerprint of exactly the
deny violations it was given for. A new push, or any new or changed denial,
makes the fingerprint or the SHA differ, and the override no longer applies.
Every override ever recorded stays in the ``policy_overrides`` table: that is
the audit log (the table refuses updates and deletes).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.forge.base import RepoRef
from bot.models import Report, Violation, overall_verdict

_FINGERPRINT_VERSION = "sluice-policy-override-v1"
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
MAX_REASON_CHARS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_overrides (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pr_key TEXT NOT NULL,
    head_sha TEXT NOT NULL,
    violations_fp TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_overrides_lookup
    ON policy_overrides (pr_key, head_sha, violations_fp);
CREATE TRIGGER IF NOT EXISTS policy_overrides_no_update
    BEFORE UPDATE ON policy_overrides
    BEGIN SELECT RAISE(ABORT, 'policy_overrides is an append-only audit log'); END;
CREATE TRIGGER IF NOT EXISTS policy_overrides_no_delete
    BEFORE DELETE ON policy_overrides
    BEGIN SELECT RAISE(ABORT, 'policy_overrides is an append-only audit log'); END;
"""


@dataclass(frozen=True)
class Override:
    id: int
    pr_key: str
    head_sha: str
    violations_fp: str
    actor: str
    reason: str
    at: datetime  # timezone-aware, UTC

    def to_dict(self) -> dict[str, Any]:
        """The ``override`` value of the JSON report."""
        return {
            "by": self.actor,
            "reason": self.reason,
            "head": self.head_sha,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "violations": self.violations_fp,
        }


def pr_key(repo: RepoRef, number: int) -> str:
    """A PR's key in the store, e.g. ``github:acme/deploy#12``."""
    return f"{repo.forge}:{repo.full_name}#{number}"


def deny_violations(report: Report) -> list[tuple[str, Violation]]:
    """(app name, violation) for every deny violation in ``report``."""
    return [
        (app.name, violation)
        for app in report.apps
        for violation in app.policy.violations
        if violation.severity == "deny"
    ]


def violations_fingerprint(report: Report) -> str:
    """sha256 over the sorted set of (app, rule, kind, namespace, name, msg) of deny violations."""
    items = sorted(
        {
            json.dumps([app, v.rule, v.kind, v.namespace, v.name, v.msg], ensure_ascii=False)
            for app, v in deny_violations(report)
        }
    )
    digest = hashlib.sha256(_FINGERPRINT_VERSION.encode())
    for item in items:
        digest.update(b"\n" + item.encode())
    return digest.hexdigest()


def apply_override(report: Report, override: Override) -> Report:
    """A copy of ``report`` whose policy denials count as overridden.

    Apps failed only by policy denials get policy verdict ``warn`` (the
    violations stay listed) and the report carries ``override``; render errors,
    policy engine errors and signature failures still fail. Raises ValueError
    if ``override`` was not given for this report's head and denials.
    """
    if override.head_sha != report.head:
        raise ValueError(
            f"the override is for head {override.head_sha[:12]}, not {report.head[:12]}: "
            "a new push voids it"
        )
    if override.violations_fp != violations_fingerprint(report):
        raise ValueError("the policy violations changed since the override; it no longer applies")
    result = copy.deepcopy(report)
    for app in result.apps:
        if app.policy.verdict == "fail" and not app.policy.error:
            app.policy.verdict = "warn"
    result.override = override.to_dict()
    result.verdict = overall_verdict(result)
    return result


class OverrideStore:
    """Overrides in SQLite; the file may be shared with the job queue (own table, WAL)."""

    def __init__(self, db_path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self._path = Path(db_path)
        self._busy_timeout = busy_timeout
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    def record(
        self,
        pr_key: str,
        head_sha: str,
        violations_fp: str,
        actor: str,
        reason: str,
        at: datetime,
    ) -> Override:
        """Append an override to the audit log and return it."""
        _check_record(pr_key, head_sha, violations_fp, actor, reason, at)
        stamp = at.astimezone(UTC)
        with self._connect() as conn:
            cursor = conn.execute(
                "INSERT INTO policy_overrides (pr_key, head_sha, violations_fp, actor, reason, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (pr_key, head_sha, violations_fp, actor, reason, stamp.isoformat()),
            )
            row_id = cursor.lastrowid
        assert row_id is not None
        return Override(row_id, pr_key, head_sha, violations_fp, actor, reason, stamp)

    def active(self, pr_key: str, head_sha: str, violations_fp: str) -> Override | None:
        """The latest override for exactly this head and these denials, if any."""
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM policy_overrides"
                " WHERE pr_key = ? AND head_sha = ? AND violations_fp = ?"
                " ORDER BY id DESC LIMIT 1",
                (pr_key, head_sha, violations_fp),
            ).fetchone()
        return _override(row) if row else None

    def history(self, pr_key: str) -> list[Override]:
        """Every override recorded for the PR, oldest first (the audit log)."""
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM policy_overrides WHERE pr_key = ? ORDER BY id",
                (pr_key,),
            ).fetchall()
        return [_override(row) for row in rows]

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One connection per call: safe across threads, and the queue may hold the file too.
        with closing(sqlite3.connect(self._path, timeout=self._busy_timeout)) as conn:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            with conn:  # one transaction: committed on success, rolled back on error
                yield conn


_COLUMNS = "id, pr_key, head_sha, violations_fp, actor, reason, at"


def _override(row: tuple[Any, ...]) -> Override:
    row_id, key, head, fp, actor, reason, at = row
    return Override(row_id, key, head, fp, actor, reason, datetime.fromisoformat(at))


def _check_record(
    pr_key: str, head_sha: str, violations_fp: str, actor: str, reason: str, at: datetime
) -> None:
    if not pr_key.strip():
        raise ValueError("pr_key must not be empty")
    if not _SHA.match(head_sha):
        raise ValueError(f"head_sha must be a full lowercase commit SHA, got {head_sha[:80]!r}")
    if not _FINGERPRINT.match(violations_fp):
        raise ValueError("violations_fp must be a sha256 hex digest (see violations_fingerprint)")
    if not actor.strip():
        raise ValueError("actor must not be empty")
    if len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"reason is {len(reason)} characters; at most {MAX_REASON_CHARS}")
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")

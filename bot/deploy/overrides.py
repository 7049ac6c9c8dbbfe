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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.deploy.sql import SqlDatabase
from bot.forge.base import RepoRef
from bot.models import Report, Violation, overall_verdict

_FINGERPRINT_VERSION = "sluice-policy-override-v1"
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
MAX_REASON_CHARS = 2000


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
    """Overrides in the bot's database (its ``policy_overrides`` table refuses updates)."""

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

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
        with self._db.transaction() as tx:
            row = tx.one(
                "INSERT INTO policy_overrides (pr_key, head_sha, violations_fp, actor, reason, at)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (pr_key, head_sha, violations_fp, actor, reason, stamp.isoformat()),
            )
        assert row is not None
        return Override(int(row["id"]), pr_key, head_sha, violations_fp, actor, reason, stamp)

    def active(self, pr_key: str, head_sha: str, violations_fp: str) -> Override | None:
        """The latest override for exactly this head and these denials, if any."""
        with self._db.read() as tx:
            row = tx.one(
                f"SELECT {_COLUMNS} FROM policy_overrides"
                " WHERE pr_key = ? AND head_sha = ? AND violations_fp = ?"
                " ORDER BY id DESC LIMIT 1",
                (pr_key, head_sha, violations_fp),
            )
        return _override(row) if row else None

    def history(self, pr_key: str) -> list[Override]:
        """Every override recorded for the PR, oldest first (the audit log)."""
        with self._db.read() as tx:
            rows = tx.all(
                f"SELECT {_COLUMNS} FROM policy_overrides WHERE pr_key = ? ORDER BY id",
                (pr_key,),
            )
        return [_override(row) for row in rows]


_COLUMNS = "id, pr_key, head_sha, violations_fp, actor, reason, at"


def _override(row: Mapping[str, Any]) -> Override:
    return Override(
        int(row["id"]), row["pr_key"], row["head_sha"], row["violations_fp"], row["actor"],
        row["reason"], datetime.fromisoformat(row["at"]),
    )  # fmt: skip


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

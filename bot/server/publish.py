"""What the bot shows on a pull request (or a pushed commit): the sticky report comment
and commit statuses.

Forge-agnostic: everything here goes through ``bot.forge.base.Forge``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.forge.base import Comment, Forge, PullRequest, RepoRef, StatusState
from bot.models import Report
from bot.report import MARKER

PREVIEW_CONTEXT = "sluice/preview"
POLICY_CONTEXT = "sluice/policy"
SIGNATURES_CONTEXT = "sluice/signatures"
GATE_CONTEXTS = (PREVIEW_CONTEXT, POLICY_CONTEXT, SIGNATURES_CONTEXT)
SUPERSEDED_NOTE = "_This Sluice report was superseded by a newer one below._"


@dataclass(frozen=True)
class Status:
    context: str
    state: StatusState
    description: str


def upsert_report(forge: Forge, pr: PullRequest, body: str, bot_login: str) -> Comment:
    """Edit the bot's report comment in place, or create it if there is none.

    Only comments by the bot that carry the marker count. If a lost response ever
    left two reports, the oldest is kept and the others are collapsed.
    """
    ours = [
        c
        for c in forge.list_comments(pr)
        if c.author.lower() == bot_login.lower() and MARKER in c.body
    ]
    if not ours:
        return forge.create_comment(pr, body)
    keep, *extra = ours
    for stale in extra:
        forge.edit_comment(pr, stale.id, SUPERSEDED_NOTE)
    if keep.body == body:
        return keep
    return forge.edit_comment(pr, keep.id, body)


def upsert_commit_report(
    forge: Forge, repo: RepoRef, sha: str, body: str, bot_login: str
) -> Comment:
    """The bot's report comment on commit ``sha``: edited in place, or created once.

    Where the forge cannot edit commit comments the first report stands unchanged;
    a re-run never adds a second one.
    """
    ours = [
        c
        for c in forge.list_commit_comments(repo, sha)
        if c.author.lower() == bot_login.lower() and MARKER in c.body
    ]
    if not ours:
        return forge.create_commit_comment(repo, sha, body)
    keep = ours[0]
    if keep.body == body:
        return keep
    return forge.edit_commit_comment(repo, sha, keep.id, body) or keep


def pending_statuses() -> list[Status]:
    return [
        Status(context, "pending", "Sluice is checking this commit") for context in GATE_CONTEXTS
    ]


def gate_statuses(report: Report) -> list[Status]:
    """One status per gate, each with a one-line description."""
    return [_preview_status(report), _policy_status(report), _signature_status(report)]


def error_statuses(message: str) -> list[Status]:
    return [Status(context, "error", message) for context in GATE_CONTEXTS]


def publish_statuses(
    forge: Forge, pr: PullRequest, statuses: list[Status], target_url: str | None = None
) -> None:
    publish_commit_statuses(forge, pr.repo, pr.head_sha, statuses, target_url)


def publish_commit_statuses(
    forge: Forge,
    repo: RepoRef,
    sha: str,
    statuses: list[Status],
    target_url: str | None = None,
) -> None:
    for status in statuses:
        forge.set_status(repo, sha, status.context, status.state, status.description, target_url)


def _preview_status(report: Report) -> Status:
    broken = [app.name for app in report.apps if app.status == "error"]
    if report.errors:
        return Status(PREVIEW_CONTEXT, "failure", f"config error: {report.errors[0]}")
    if broken:
        return Status(PREVIEW_CONTEXT, "failure", f"render failed: {', '.join(broken)}")
    changed = [app for app in report.apps if app.status != "unchanged"]
    objects = sum(len(app.changes) for app in report.apps)
    if not report.apps:
        return Status(PREVIEW_CONTEXT, "success", "no app is affected by this change")
    return Status(
        PREVIEW_CONTEXT,
        "success",
        f"{len(changed)} of {len(report.apps)} apps changed, {objects} objects",
    )


def _policy_status(report: Report) -> Status:
    verdicts = [app.policy.verdict for app in report.apps]
    denies = sum(1 for app in report.apps for v in app.policy.violations if v.severity == "deny")
    warns = sum(1 for app in report.apps for v in app.policy.violations if v.severity == "warn")
    if "error" in verdicts:
        failed = [app.name for app in report.apps if app.policy.verdict == "error"]
        return Status(POLICY_CONTEXT, "error", f"policy engine error in {', '.join(failed)}")
    if "fail" in verdicts:
        return Status(POLICY_CONTEXT, "failure", f"{denies} deny violations, {warns} warnings")
    if report.override:
        by = report.override.get("by", "a policy owner")
        return Status(POLICY_CONTEXT, "success", f"{denies} deny violations approved by @{by}")
    if warns:
        return Status(POLICY_CONTEXT, "success", f"passed with {warns} warnings")
    return Status(POLICY_CONTEXT, "success", "no policy violations")


def _signature_status(report: Report) -> Status:
    signatures = report.signatures
    if signatures.verdict == "skipped":
        return Status(SIGNATURES_CONTEXT, "success", "signature checks are off for this repo")
    bad = [c for c in signatures.commits if c.status != "valid"]
    total = len(signatures.commits)
    if not bad:
        return Status(
            SIGNATURES_CONTEXT, "success", f"all {total} commits carry trusted signatures"
        )
    kinds = sorted({c.status for c in bad})
    return Status(
        SIGNATURES_CONTEXT, "failure", f"{len(bad)} of {total} commits: {', '.join(kinds)}"
    )

"""The deploy, hold and drift comments the bot posts for merge-to-deploy.

Only text: ``bot.deploy.promoter`` and its parts decide what happened and when to post.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.deploy.puller_client import LastResult
from bot.forge.base import Comment, Forge, PullRequest, StatusState
from bot.report.escape import code, code_block, html_code, html_text, one_line, text, truncate
from bot.report.words import counts, made_line, object_name, plural

MAX_DRIFT_COMMENT_CHARS = 60_000
MAX_LISTED_FAILURES = 10
#: How an app's row reads from the wake-up until the puller reports.
DEPLOYING = "⏳ deploying"
DEPLOY_MARKER = "<!-- sluice:deploy {sha} -->"
_UPDATED = re.compile(r"\n\n<sub>(?:made|updated) [^<]*</sub>$")


def upsert_deploy_comment(
    forge: Forge, pr: PullRequest, sha: str, body: str, bot_login: str, now: datetime
) -> None:
    """One deploy comment per merged (or synced) ``sha``: created once, then edited in
    place as the puller progresses. Found again by its hidden marker."""
    marker = DEPLOY_MARKER.format(sha=sha)
    existing = _find(forge, pr, marker, bot_login)
    stamp = made_line(now, "made" if existing is None else "updated")
    full = f"{marker}\n{body}\n\n{stamp}"
    if existing is None:
        forge.create_comment(pr, full)
    elif _UPDATED.sub("", existing.body) != _UPDATED.sub("", full):
        forge.edit_comment(pr, existing.id, full)


def update_deploy_row(
    forge: Forge, pr: PullRequest, sha: str, outcome: Outcome, bot_login: str, now: datetime,
    fallback: str,
) -> None:  # fmt: skip
    """Replace ``outcome``'s app row in the deploy comment for ``sha``; post ``fallback``
    as that comment when there is none (or it has no row for the app)."""
    existing = _find(forge, pr, DEPLOY_MARKER.format(sha=sha), bot_login)
    body = None
    if existing is not None:
        inner = existing.body.split("\n", 1)[1] if "\n" in existing.body else ""
        inner = _UPDATED.sub("", inner)
        body = with_row(inner, outcome)
    upsert_deploy_comment(forge, pr, sha, body or fallback, bot_login, now)


def _find(forge: Forge, pr: PullRequest, marker: str, bot_login: str) -> Comment | None:
    for comment in forge.list_comments(pr):
        if comment.author.lower() == bot_login.lower() and comment.body.startswith(marker):
            return comment
    return None


@dataclass(frozen=True)
class Outcome:
    """What the puller did for one app (``result`` None: it did not say in time)."""

    app: str
    result: LastResult | None
    health: str = "Unknown"
    problem: str = ""
    #: The revision the puller was woken for and is deploying now (no result yet).
    deploying: str = ""

    @property
    def state(self) -> StatusState:
        if self.deploying:
            return "pending"
        if self.result is None:
            return "pending" if "timed out" in self.problem else "error"
        if not self.result.succeeded or self.result.health == "Degraded":
            return "failure"
        return "success"


def comment_notes(notes: list[str]) -> list[str]:
    return ["", *notes] if notes else []


def stamped(lines: list[str], now: datetime) -> str:
    """A comment's lines with the line saying when it was made at its end."""
    return "\n".join([*lines, "", made_line(now)])


def held_comment(sha: str, notes: list[str], now: datetime) -> str:
    return stamped([f"### ⏸️ Sluice did not deploy {code(sha[:12])}", "", *notes], now)


def refusal_comment(sha: str, failures: list[str], apps: list[str], now: datetime) -> str:
    """Gates failed at the merge commit: nothing was written to the ledger."""
    lines = [
        f"### ⛔ Sluice did not deploy {code(sha[:12])}",
        "",
        "No ledger entry was written: these gates failed at the merge commit.",
        "",
        *[f"- {line}" for line in failures[:MAX_LISTED_FAILURES]],
    ]
    if len(failures) > MAX_LISTED_FAILURES:
        lines.append(f"- … and {len(failures) - MAX_LISTED_FAILURES} more")
    lines += ["", "Apps not deployed: " + ", ".join(code(a) for a in apps)]
    return stamped(lines, now)


def changed_anything(result: LastResult) -> bool:
    return bool(result.created or result.updated or result.pruned)


def outcome_description(outcome: Outcome) -> str:
    result = outcome.result
    if result is None:
        return outcome.problem or "the puller did not report"
    rev = (result.revision or "")[:12]
    if not result.succeeded and result.message:
        return f"deploy failed{' ' + rev if rev else ''}: {one_line(result.message)}"
    verb = "deployed" if result.succeeded else "deploy failed"
    return f"{verb} {rev}: {_changes(result)}; {result.health}"


def _changes(result: LastResult) -> str:
    parts = ((result.created, "created"), (result.updated, "updated"), (result.pruned, "pruned"))
    return counts(parts) or "no changes"


def outcomes_line(outcomes: list[Outcome]) -> str:
    if not outcomes:
        return "the puller picks it up on its next cycle"
    return "; ".join(f"{code(o.app)}: {_outcome_markdown(o)}" for o in outcomes)


def _outcome_markdown(o: Outcome) -> str:
    """:func:`outcome_description` with what the puller wrote escaped for Markdown."""
    r = o.result
    if r is None:
        return text(o.problem or "the puller did not report")
    rev = (r.revision or "")[:12]
    if not r.succeeded and r.message:
        return f"deploy failed{' ' + rev if rev else ''}: {text(r.message)}"
    verb = "deployed" if r.succeeded else "deploy failed"
    return f"{verb} {rev}: {_changes(r)}; {text(r.health)}"


def deploy_comment(title: str, where: str, outcomes: list[Outcome], notes: list[str]) -> str:
    lines = [title, ""]
    if where:
        lines += [f"Approved{where}.", ""]
    if outcomes:
        lines += [
            "| App | Result | Health | Changes | Duration |",
            "| --- | --- | --- | --- | ---: |",
        ]
        lines += [outcome_row(o) for o in outcomes]
        failed = [o for o in outcomes if o.result is not None and o.result.message
                  and o.state != "success"]  # fmt: skip
        for o in failed:
            assert o.result is not None
            lines += ["", f"{code(o.app)}: {text(truncate(o.result.message, 2_000))}"]
    lines += comment_notes(notes)
    return "\n".join(lines)


def outcome_row(o: Outcome) -> str:
    """One app's row of the deploy table; its first cell identifies it (see :func:`with_row`)."""
    r = o.result
    if o.deploying:
        return (
            f"| {code(o.app, in_table=True)} | {DEPLOYING} {code(o.deploying[:12])} | – | – | – |"
        )
    if r is None:
        return f"| {code(o.app, in_table=True)} | ⏳ {text(o.problem)} | – | – | – |"
    icon = "✅" if o.state == "success" else "❌"
    duration = f"{r.duration_s:.1f}s" if r.duration_s is not None else "–"
    return (
        f"| {code(o.app, in_table=True)} | {icon} {text(r.result)} | {text(r.health)} | "
        f"{_changes(r)} | {duration} |"
    )


def with_row(body: str, o: Outcome) -> str | None:
    """``body`` (a deploy comment) with ``o``'s app row replaced; None if it has no such row."""
    first = f"| {code(o.app, in_table=True)} |"
    lines = body.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(first):
            lines[i] = outcome_row(o)
            extra = []
            if o.result is not None and o.result.message and o.state != "success":
                extra = ["", f"{code(o.app)}: {text(truncate(o.result.message, 2_000))}"]
            return "\n".join(lines + extra)
    return None


def drift_gone_comment(app: str, revision: str, now: datetime) -> str:
    return stamped([f"### ✅ Drift on {code(app)} is gone", "",
                    f"The cluster matches {code(revision[:12])} again."], now)  # fmt: skip


def drift_comment(app: str, revision: str, drift: list[dict[str, Any]], now: datetime) -> str:
    lines = [
        f"### ⚠️ Drift on {code(app)}",
        "",
        f"{plural(len(drift), 'object')} in the cluster {'differs' if len(drift) == 1 else 'differ'}"
        f" from the approved revision {code(revision[:12])}. Secret values are masked. Comment "
        f"{code('/sync ' + app)} to restore the approved state.",
        "",
    ]
    budget = MAX_DRIFT_COMMENT_CHARS
    for item in drift:
        name = object_name(item.get("kind"), item.get("namespace"), item.get("name"))
        diff = str(item.get("diff") or "")
        block = code_block(truncate(diff, 8000), "diff") if diff else ""
        # Inside raw HTML: HTML escaping, not Markdown escaping (a backslash would show).
        part = (f"<details><summary>{html_text(str(item.get('action') or 'update'))} "
                f"{html_code(name)}</summary>\n\n{block}\n</details>")  # fmt: skip
        if len(part) > budget:
            lines.append("… and more objects (the comment size limit was reached)")
            break
        budget -= len(part)
        lines.append(part)
    return stamped(lines, now)

"""The deploy, hold and drift comments the bot posts for merge-to-deploy.

Only text: ``bot.deploy.promote`` decides what happened and when to post.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.deploy.puller_client import LastResult
from bot.forge.base import StatusState
from bot.report.escape import code, code_block, html_code, html_text, one_line, text, truncate
from bot.report.words import object_name

MAX_DRIFT_COMMENT_CHARS = 60_000


@dataclass(frozen=True)
class Outcome:
    """What the puller did for one app (``result`` None: it did not say in time)."""

    app: str
    result: LastResult | None
    health: str = "Unknown"
    problem: str = ""

    @property
    def state(self) -> StatusState:
        if self.result is None:
            return "pending" if "timed out" in self.problem else "error"
        if not self.result.succeeded or self.result.health == "Degraded":
            return "failure"
        return "success"


def comment_notes(notes: list[str]) -> list[str]:
    return ["", *notes] if notes else []


def held_comment(sha: str, notes: list[str]) -> str:
    return "\n".join([f"### ⏸️ Sluice did not deploy {code(sha[:12])}", "", *notes])


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
    return (f"{verb} {rev}: {result.created} created, {result.updated} updated, "
            f"{result.pruned} pruned; {result.health}")  # fmt: skip


def outcomes_line(outcomes: list[Outcome]) -> str:
    if not outcomes:
        return "the puller picks it up on its next cycle"
    return "; ".join(f"{code(o.app)}: {outcome_description(o)}" for o in outcomes)


def deploy_comment(title: str, where: str, outcomes: list[Outcome], notes: list[str]) -> str:
    lines = [title, ""]
    if where:
        lines += [f"Approved{where}.", ""]
    if outcomes:
        lines += [
            "| app | result | health | created | updated | pruned | duration |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for o in outcomes:
            r = o.result
            if r is None:
                lines.append(f"| {code(o.app, in_table=True)} | ⏳ {text(o.problem)} | – | – | – "
                             "| – | – |")  # fmt: skip
                continue
            icon = "✅" if o.state == "success" else "❌"
            duration = f"{r.duration_s:.1f}s" if r.duration_s is not None else "–"
            lines.append(
                f"| {code(o.app, in_table=True)} | {icon} {text(r.result)} | {text(r.health)} | "
                f"{r.created} | {r.updated} | {r.pruned} | {duration} |"
            )
        failed = [o for o in outcomes if o.result is not None and o.result.message
                  and o.state != "success"]  # fmt: skip
        for o in failed:
            assert o.result is not None
            lines += ["", f"{code(o.app)}: {text(truncate(o.result.message, 2_000))}"]
    lines += comment_notes(notes)
    return "\n".join(lines)


def drift_comment(app: str, revision: str, drift: list[dict[str, Any]]) -> str:
    lines = [
        f"### ⚠️ Drift on {code(app)}",
        "",
        f"{len(drift)} object{'s' if len(drift) != 1 else ''} in the cluster differ from the "
        f"approved revision {code(revision[:12])}. Secret values are masked. Comment "
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
    return "\n".join(lines)

"""The PR comment: one Markdown document rendered from a :class:`Report`.

Layout, in this order: freshness note, verdict, what blocks (render errors, deny
violations, signature problems), next steps, summary table, changes per app,
warnings, and a footer linking the full report and saying when the comment was made.

The comment fits the forge's limit (:mod:`bot.report.context`). Room is handed out
by importance, not by position: blockers first (they always show), then the next
steps, the summary (blocking rows always), warnings, and the diffs last. Whatever
does not fit is named and is one click away in the full report.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.models import Report
from bot.report import fit
from bot.report.changes import render_changes
from bot.report.context import CommentContext
from bot.report.escape import code, code_block, text, truncate
from bot.report.state import (
    POLICY_STATE,
    Found,
    bad_commits,
    headline_words,
    is_blocking,
    override_note,
    policy_state,
    render_errors,
    violations,
)
from bot.report.words import change_counts, plural, short_sha, utc_time

MARKER = "<!-- sluice:report -->"
_FOOTER_HEAD = re.compile(r"made (?:[^`<]* )?for `([0-9a-f]{7,40})`</sub>")
DEFAULT_BUDGET = 65_536
# Below this not even a headline and one line per section can be promised.
MIN_BUDGET = 2_000
VERDICT_EMOJI = {"pass": "✅", "warn": "⚠️", "fail": "❌", "error": "🛑"}
SIGNATURE_EMOJI = {"pass": "✅", "fail": "❌", "skipped": "⏭️"}
ERROR_TEXT_LIMIT = 2_000
MESSAGE_LIMIT = 500
# More apps than this: passing and unchanged rows collapse into one <details>.
COLLAPSE_AT = 10
# The collapsed passing/unchanged rows never take more than this share of what is left.
COLLAPSED_SHARE = 0.5
# The warnings table never takes more than this share of what the diffs could use.
WARNINGS_SHARE = 0.25
VIOLATION_HEADER = "| App | Rule | Object | Message | Origin |\n| --- | --- | --- | --- | --- |\n"
BLOCKERS_HEADING = "### What blocks this PR\n\n"
OVERRIDDEN_HEADING = "### Accepted by a policy owner\n\n"
SUMMARY_HEADER = "| App | Status | Changes | Policy |\n| --- | --- | --- | --- |\n"


def render_markdown(
    report: Report,
    *,
    budget: int = DEFAULT_BUDGET,
    title: str = "Sluice preview",
    extra: list[str] | None = None,
    context: CommentContext | None = None,
) -> str:
    """The comment body for ``report``, at most ``budget`` characters long.

    ``extra`` holds trusted Markdown paragraphs (written by Sluice itself, e.g. a
    command hint) placed before the footer; they count against the budget."""
    if budget < MIN_BUDGET:
        raise ValueError(f"budget must be at least {MIN_BUDGET} characters, got {budget}")
    ctx = context or CommentContext()
    head = f"{MARKER}\n{_freshness(report, ctx)}{headline(report, title)}\n\n"
    tail = "".join(f"{paragraph.rstrip()}\n\n" for paragraph in extra or []) + _footer(report, ctx)
    room = budget - len(head) - len(tail)
    if room < 0:
        raise ValueError("the extra paragraphs do not fit in the comment budget")

    summary_rows, collapsed_rows = _summary_rows(report)
    parts = _Parts(report, ctx)
    blocks = parts.blocker_sections()
    minimums = sum(fit.minimum(h, r, m) for h, r, m in blocks)
    summary_min = len(_summary_intro(report)) + fit.minimum(
        SUMMARY_HEADER, summary_rows, parts.more("app")
    )
    placed: list[str] = []
    if any(rows for _, rows, _ in blocks):
        failing = report.verdict in ("fail", "error")
        placed.append(BLOCKERS_HEADING if failing else OVERRIDDEN_HEADING)
        room -= len(placed[0])
    if room < minimums + summary_min:
        raise ValueError(f"a budget of {budget} characters cannot hold this report's blockers")
    for i, (heading, rows, more) in enumerate(blocks):
        later = sum(fit.minimum(h, r, m) for h, r, m in blocks[i + 1 :]) + summary_min
        out = fit.fit_rows(heading, rows, more, room - later)
        placed.append(out)
        room -= len(out)
    blockers = "".join(placed)
    steps = _next_steps(report, ctx)
    steps = steps if len(steps) <= room - summary_min else ""
    room -= len(steps)
    notes = _notes(report)
    notes = notes if len(notes) <= room - summary_min else ""
    room -= len(notes)
    summary = _summary(report, summary_rows, collapsed_rows, parts, room)
    room -= len(summary)
    warn_rows = [_violation_row(f) for f in violations(report, "warn")]
    warnings = fit.fit_rows(
        "### Warnings\n\n" + VIOLATION_HEADER,
        warn_rows,
        parts.more("warning"),
        int(room * WARNINGS_SHARE),
    )
    if warn_rows and not warnings:
        warnings = f"### Warnings\n\n{parts.more('warning')(len(warn_rows))}"
        warnings = warnings if len(warnings) <= room else ""
    room -= len(warnings)
    changes = render_changes(report, room, ctx.full_report())
    return head + blockers + steps + notes + summary + changes + warnings + tail


def _notes(report: Report) -> str:
    """What discovery found and what was left unrendered (external sources): no gate fails."""
    lines = [text(truncate(note, MESSAGE_LIMIT)) for note in report.notes]
    lines += [
        f"{code(app.name)}: {text(truncate(app.error, MESSAGE_LIMIT))}"
        for app in report.apps
        if app.error and app.error.startswith(("not rendered", "unresolved"))
    ]
    return "### Notes\n\n" + "".join(f"- {line}\n" for line in lines) + "\n" if lines else ""


def headline(report: Report, title: str) -> str:
    """One line: emoji, verdict in words, and the compared range."""
    emoji = VERDICT_EMOJI.get(report.verdict, "🛑")
    return (
        f"{emoji} **{text(title)}: {headline_words(report)}** for "
        f"{code(short_sha(report.base))}…{code(short_sha(report.head))}"
    )


def _freshness(report: Report, ctx: CommentContext) -> str:
    if not ctx.previewing or ctx.previewing == report.head:
        return ""
    return stale_note(ctx.previewing, report.head)


def stale_note(previewing: str, made_for: str | None) -> str:
    """The freshness line at the top of a comment whose head is no longer the PR's."""
    shown = (
        f"this report is for {code(short_sha(made_for))}" if made_for else "this report is older"
    )
    return (
        f"> ⏳ **Out of date:** Sluice is previewing the new head {code(short_sha(previewing))};"
        f" {shown}.\n\n"
    )


def mark_stale(body: str, previewing: str) -> str:
    """``body`` (a report comment) with the freshness line for ``previewing`` at its top,
    replacing any earlier one; unchanged if it is not a report or already for that head."""
    if not body.startswith(MARKER + "\n"):
        return body
    rest = body[len(MARKER) + 1 :]
    if rest.startswith("> ⏳ **Out of date:**"):
        rest = rest.split("\n\n", 1)[1] if "\n\n" in rest else ""
    made_for = _FOOTER_HEAD.search(body)
    head = made_for.group(1) if made_for else None
    if head and previewing.startswith(head):
        return body
    return MARKER + "\n" + stale_note(previewing, head) + rest


def _footer(report: Report, ctx: CommentContext) -> str:
    bits = []
    if ctx.report_url:
        bits.append(f"📄 [Full report]({ctx.report_url}) (every diff, the JSON)")
    made = f"for {code(short_sha(report.head))}"
    if ctx.made_at is not None:
        made = f"{utc_time(ctx.made_at)} {made}"
    bits.append(f"made {made}")
    return "<sub>" + " · ".join(bits) + "</sub>\n"


class _Parts:
    def __init__(self, report: Report, ctx: CommentContext) -> None:
        self.report = report
        self.ctx = ctx

    def more(self, noun: str) -> Callable[[int], str]:
        full = self.ctx.full_report()
        return lambda n: f"_… {plural(n, 'more ' + noun)} not shown here: all in {full}._\n\n"

    def blocker_sections(self) -> list[tuple[str, list[str], Callable[[int], str]]]:
        report = self.report
        errors = [
            f"**{text(label)}:**\n\n{code_block(truncate(message, ERROR_TEXT_LIMIT), 'text')}\n"
            for label, message in render_errors(report)
        ]
        denies = [_violation_row(f, report) for f in violations(report, "deny")]
        deny_heading = "**Policy denies**"
        if report.override:
            deny_heading += f" — 🔓 **Policy override:** {text(override_note(report))}"
        commits = [_signature_row(c) for c in bad_commits(report)]
        return [
            ("**Errors**\n\n", errors, self.more("error")),
            (deny_heading + "\n\n" + VIOLATION_HEADER, denies, self.more("deny violation")),
            (
                "**Signature problems**\n\n"
                "| Commit | Subject | Author | Problem | Key |\n| --- | --- | --- | --- | --- |\n",
                commits,
                self.more("commit"),
            ),
        ]


def _violation_row(found: Found, report: Report | None = None) -> str:
    v = found.violation
    origin = {"new": "🆕 new", "existing": "existing on base"}.get(found.origin, found.origin)
    if report is not None and report.override and v.severity == "deny":
        origin += " · 🔓 overridden"
    obj = code(found.object, in_table=True) if found.object else "—"
    return (
        f"| {code(found.app, in_table=True)} | {code(v.rule, in_table=True)} | {obj} "
        f"| {text(truncate(v.msg, MESSAGE_LIMIT))} | {origin} |\n"
    )


def _signature_row(c) -> str:
    key = "—"
    if c.fingerprint:
        key = f"{text(c.method)} {code(c.fingerprint, in_table=True)}"
    elif c.method != "none":
        key = text(c.method)
    if c.signer:
        key += f" ({code(c.signer, in_table=True)})"
    return (
        f"| {code(c.sha[:7], in_table=True)} | {text(truncate(c.subject, 120)) or '—'} "
        f"| {text(truncate(c.author, 120)) or '—'} | {text(c.status)} | {key} |\n"
    )


def _next_steps(report: Report, ctx: CommentContext) -> str:
    steps = []
    if render_errors(report):
        steps.append("Fix the errors above and push; nothing can merge while an app fails.")
    open_denies = [f for f in violations(report, "deny") if not report.override]
    if open_denies:
        who = f" ({text(ctx.approve_policy_who)})" if ctx.approve_policy_who else ""
        steps.append(
            "Fix the denied objects and push, or accept them for this exact head: comment "
            f"`/approve-policy <reason>`{who}."
        )
    bad = bad_commits(report)
    if bad:
        listed = ", ".join(
            f"{code(c.sha[:7])} {text(truncate(c.subject, 60))}".rstrip() for c in bad[:10]
        )
        more = f" and {len(bad) - 10:,} more" if len(bad) > 10 else ""
        steps.append(f"Re-sign with a trusted key and force-push: {listed}{more}.")
    if ctx.approvals is not None and ctx.approvals.required:
        a = ctx.approvals
        missing = max(a.required - a.given, 0)
        if missing:
            steps.append(
                f"Approvals needed for merge: {missing} of {a.required}, for {code(a.sha[:12])} "
                "(approvals of an earlier head do not count)."
            )
        else:
            steps.append(
                f"Approvals for merge: {a.given} of {a.required} given, for {code(a.sha[:12])}."
            )
    if not steps:
        return ""
    return "### Next steps\n\n" + "".join(f"- {s}\n" for s in steps) + "\n"


def _summary_intro(report: Report) -> str:
    sig = report.signatures
    emoji = SIGNATURE_EMOJI.get(sig.verdict, "🛑")
    if sig.verdict == "skipped":
        signatures = f"{emoji} skipped (mode {code(sig.mode)})"
    else:
        n = len(sig.commits)
        signatures = (
            f"{emoji} {sig.verdict} · {plural(n, 'commit')} checked (mode {code(sig.mode)})"
        )
    if not report.apps:
        return (
            f"### Summary\n\nNo app is affected by this change.\n\n**Signatures:** {signatures}\n\n"
        )
    return f"### Summary\n\n**Signatures:** {signatures}\n\n"


def _summary_rows(report: Report) -> tuple[list[str], list[str]]:
    """(rows always shown, rows collapsed when there are many apps)."""
    shown, collapsed = [], []
    many = len(report.apps) > COLLAPSE_AT
    for app in report.apps:
        row = (
            f"| {code(app.name, in_table=True)} | {text(app.status)} "
            f"| {text(change_counts(app.changes)) or '—'} "
            f"| {POLICY_STATE.get(policy_state(app, report), '🛑 error')} |\n"
        )
        (collapsed if many and not is_blocking(app) else shown).append(row)
    return shown, collapsed


def _summary(
    report: Report, shown: list[str], collapsed: list[str], parts: _Parts, room: int
) -> str:
    """The summary table: blocking rows in view; the rest (many apps) in one <details>
    that takes at most :data:`COLLAPSED_SHARE` of the room, so diffs still get some."""
    intro = _summary_intro(report)
    out = intro + fit.fit_rows(SUMMARY_HEADER, shown, parts.more("app"), room - len(intro))
    if collapsed:
        changed = sum(1 for app in report.apps if app.changes and not is_blocking(app))
        label = plural(len(collapsed), "passing or unchanged app")
        if changed:
            label += f" ({changed:,} with changes)"
        opening = f"<details><summary>{label}</summary>\n\n"
        closing = "</details>\n\n"
        limit = int((room - len(out)) * COLLAPSED_SHARE) - len(opening) - len(closing)
        inner = fit.fit_rows(SUMMARY_HEADER, collapsed, parts.more("app"), limit)
        if inner:
            out += opening + inner + closing
        else:
            line = parts.more("passing or unchanged app")(len(collapsed))
            out += line if len(line) <= room - len(out) else ""
    return out

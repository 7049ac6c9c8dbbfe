"""The PR comment: one Markdown document rendered from a :class:`Report`.

The comment must fit the forge's size limit (GitHub: 65,536 characters). Headline,
errors, summary and policy violations are placed first and always fit; object
diffs fill what is left, cut only between objects, and the comment says what it
left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.diff import summarize
from bot.models import AppReport, CommitCheck, ObjectChange, Report, Violation
from bot.report.escape import code, code_block, html_code, text, truncate

MARKER = "<!-- sluice:report -->"
DEFAULT_BUDGET = 65_000
# Below this not even a headline and one line per section can be promised.
MIN_BUDGET = 2_000

VERDICT_EMOJI = {"pass": "✅", "warn": "⚠️", "fail": "❌", "error": "🛑"}
SIGNATURE_EMOJI = {"pass": "✅", "fail": "❌", "skipped": "⏭️"}
SEVERITY_EMOJI = {"deny": "❌", "warn": "⚠️"}

ERROR_TEXT_LIMIT = 2_000
MESSAGE_LIMIT = 500
# Room kept for the closing "what was left out" note.
_OMISSION_NOTE_RESERVE = 300
_APP_NOTE_RESERVE = 80


def render_markdown(
    report: Report,
    *,
    budget: int = DEFAULT_BUDGET,
    title: str = "Sluice preview",
    extra: list[str] | None = None,
) -> str:
    """The comment body for ``report``, at most ``budget`` characters long.

    ``extra`` holds trusted Markdown paragraphs (written by Sluice itself, e.g. a
    command hint) appended at the end; they count against the budget."""
    if budget < MIN_BUDGET:
        raise ValueError(f"budget must be at least {MIN_BUDGET} characters, got {budget}")
    head = f"{MARKER}\n{headline(report, title)}\n\n{_override_note(report)}"
    tail = "".join(f"{paragraph.rstrip()}\n\n" for paragraph in extra or [])
    avail = budget - len(head) - len(tail) - _OMISSION_NOTE_RESERVE
    if avail < 0:
        raise ValueError("the extra paragraphs do not fit in the comment budget")

    sections = [
        _Section(_summary_heading(report), _summary_rows(report), _more("apps"), always=True),
        _Section("### 🛑 Errors\n\n", _error_items(report), _more("errors")),
        _Section(
            "### Policy violations\n\n"
            "| Severity | App | Rule | Object | Message |\n| --- | --- | --- | --- | --- |\n",
            _violation_rows(report),
            _more("violations"),
        ),
        _Section(
            "### Signature problems\n\n"
            "| Commit | Status | Method | Signer |\n| --- | --- | --- | --- |\n",
            _signature_rows(report.signatures.commits),
            _more("commits"),
        ),
    ]
    if avail < sum(s.minimum() for s in sections):
        raise ValueError(f"a budget of {budget} characters cannot hold this report's summary")
    rendered: list[str] = []
    for i, section in enumerate(sections):
        out = section.fit(avail - sum(s.minimum() for s in sections[i + 1 :]))
        rendered.append(out)
        avail -= len(out)
    summary, errors, violations, signatures = rendered

    diffs, omitted_changes, omitted_apps = _diff_sections(report, avail)
    note = ""
    if omitted_changes:
        note = (
            f"… {omitted_changes} more object {_plural(omitted_changes, 'diff')} in "
            f"{omitted_apps} {_plural(omitted_apps, 'app')} omitted (budget); run "
            "`sluice preview` locally or see the JSON report\n\n"
        )
    return head + errors + summary + diffs + note + violations + signatures + tail


def headline(report: Report, title: str) -> str:
    """One line: emoji, verdict in words, and the compared range."""
    emoji = VERDICT_EMOJI.get(report.verdict, "🛑")
    if report.verdict == "pass":
        words = "passed"
    elif report.verdict == "warn":
        words = "passed with warnings"
    elif report.verdict == "fail":
        gates = _failed_gates(report)
        words = f"{_join_words(gates) if gates else 'checks'} failed"
    else:
        words = "error"
    return (
        f"{emoji} **{text(title)}: {words}** for "
        f"{code(_short_ref(report.base))}…{code(_short_ref(report.head))}"
    )


def _override_note(report: Report) -> str:
    override = report.override
    if not override:
        return ""
    by = str(override.get("by") or "unknown")
    reason = truncate(str(override.get("reason") or ""), MESSAGE_LIMIT)
    return (
        f"🔓 **Policy override** by {code(by)} for {code(_short_ref(str(override.get('head', ''))))}"
        f": {text(reason) or '(no reason given)'}\n\n"
    )


def _failed_gates(report: Report) -> list[str]:
    gates = []
    if any(app.status == "error" for app in report.apps):
        gates.append("render")
    if any(app.policy.verdict in ("fail", "error") for app in report.apps):
        gates.append("policy")
    if report.signatures.verdict == "fail":
        gates.append("signatures")
    return gates


@dataclass(frozen=True)
class _Section:
    """A heading and rows that must fit: rows are dropped from the end, with a count."""

    heading: str
    rows: list[str]
    more: Callable[[int], str]
    always: bool = False  # show the heading even without rows

    def minimum(self) -> int:
        if not self.rows:
            return len(self.heading) if self.always else 0
        return len(self.heading) + len(self.more(len(self.rows))) + 1

    def fit(self, limit: int) -> str:
        if not self.rows:
            return self.heading if self.always else ""
        full = self.heading + "".join(self.rows) + "\n"
        if len(full) <= limit:
            return full
        room = limit - len(self.heading) - len(self.more(len(self.rows))) - 1
        kept: list[str] = []
        for row in self.rows:
            if len(row) > room:
                break
            kept.append(row)
            room -= len(row)
        return self.heading + "".join(kept) + "\n" + self.more(len(self.rows) - len(kept))


def _more(noun: str) -> Callable[[int], str]:
    return lambda n: f"_… {n} more {noun} not shown (budget); see the JSON report_\n\n"


def _summary_heading(report: Report) -> str:
    sig = report.signatures
    emoji = SIGNATURE_EMOJI.get(sig.verdict, "🛑")
    if sig.verdict == "skipped":
        signatures = f"{emoji} skipped (mode {code(sig.mode)})"
    else:
        n = len(sig.commits)
        signatures = (
            f"{emoji} {sig.verdict} · {n} {_plural(n, 'commit')} checked (mode {code(sig.mode)})"
        )
    if not report.apps:
        return f"No app is affected by this change.\n\n**Signatures:** {signatures}\n\n"
    return (
        f"**Signatures:** {signatures}\n\n"
        "| App | Status | Created | Updated | Deleted | Policy |\n"
        "| --- | --- | ---: | ---: | ---: | --- |\n"
    )


def _summary_rows(report: Report) -> list[str]:
    rows = []
    for app in report.apps:
        counts = summarize(app.changes)
        policy = app.policy.verdict
        rows.append(
            f"| {code(app.name, in_table=True)} | {text(app.status)} | {counts['create']} "
            f"| {counts['update']} | {counts['delete']} "
            f"| {VERDICT_EMOJI.get(policy, '🛑')} {text(policy)} |\n"
        )
    return rows


def _error_items(report: Report) -> list[str]:
    items = [_error_item("Report", message) for message in report.errors]
    for app in report.apps:
        if app.error:
            items.append(_error_item(f"Render error in {code(app.name)}", app.error))
        if app.policy.error:
            items.append(_error_item(f"Policy error in {code(app.name)}", app.policy.error))
    return items


def _error_item(label: str, message: str) -> str:
    return f"**{label}:**\n\n{code_block(truncate(message, ERROR_TEXT_LIMIT), 'text')}\n"


def _violation_rows(report: Report) -> list[str]:
    found: list[tuple[AppReport, Violation]] = [
        (app, v) for app in report.apps for v in app.policy.violations
    ]
    # Denials first; stable otherwise, so the order follows the report.
    found.sort(key=lambda av: av[1].severity != "deny")
    return [
        f"| {SEVERITY_EMOJI.get(v.severity, '')} {text(v.severity)} "
        f"| {code(app.name, in_table=True)} | {code(v.rule, in_table=True)} "
        f"| {_violation_object(v)} | {text(truncate(v.msg, MESSAGE_LIMIT))} |\n"
        for app, v in found
    ]


def _violation_object(v: Violation) -> str:
    if not (v.kind or v.name):
        return "—"
    name = f"{v.namespace}/{v.name}" if v.namespace else (v.name or "")
    return code(f"{v.kind or '?'} {name}".strip(), in_table=True)


def _signature_rows(commits: list[CommitCheck]) -> list[str]:
    return [
        f"| {code(c.sha[:7], in_table=True)} | {text(c.status)} | {text(c.method)} "
        f"| {code(c.signer, in_table=True) if c.signer else '—'} |\n"
        for c in commits
        if c.status != "valid"
    ]


def _diff_sections(report: Report, avail: int) -> tuple[str, int, int]:
    """The ``<details>`` sections that fit in ``avail`` characters, and how many
    object diffs (in how many apps) were left out.

    Objects are taken in order; one that does not fit is skipped, so a single huge
    diff does not hide the small ones after it."""
    apps = [app for app in report.apps if app.changes]
    heading = "### Changes\n\n"
    closing = "</details>\n\n"
    open_attr = " open" if len(apps) == 1 else ""
    sections: list[str] = []
    used = len(heading)
    omitted_changes = omitted_apps = 0
    for app in apps:
        counts = summarize(app.changes)
        opening = (
            f"<details{open_attr}><summary>{html_code(app.name)}: {counts['create']} created, "
            f"{counts['update']} updated, {counts['delete']} deleted</summary>\n\n"
        )
        room = avail - used - len(opening) - len(closing) - _APP_NOTE_RESERVE
        blocks: list[str] = []
        for change in app.changes:
            block = _object_block(change)
            if len(block) <= room:
                blocks.append(block)
                room -= len(block)
        left_out = len(app.changes) - len(blocks)
        if left_out:
            omitted_changes += left_out
            omitted_apps += 1
        if not blocks:
            continue  # an empty section would only repeat the summary row
        if left_out:
            blocks.append(f"_… {left_out} {_plural(left_out, 'object diff')} omitted (budget)_\n\n")
        section = opening + "".join(blocks) + closing
        sections.append(section)
        used += len(section)
    body = heading + "".join(sections) if sections else ""
    return body, omitted_changes, omitted_apps


def _object_block(change: ObjectChange) -> str:
    where = f"{change.namespace}/{change.name}" if change.namespace else change.name
    header = f"**{change.action}** {code(change.kind)} {code(where)}"
    body = change.diff or "(no textual difference)\n"
    return f"{header}\n\n{code_block(body, 'diff')}\n"


def _short_ref(ref: str) -> str:
    is_sha = len(ref) >= 7 and all(c in "0123456789abcdef" for c in ref.lower())
    return ref[:7] if is_sha else ref


def _plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def _join_words(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]

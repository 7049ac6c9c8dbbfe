"""The "Live cluster" section of a PR comment: the puller's dry-run diffs per app.

It travels to :func:`bot.report.render_markdown` as one ``extra`` paragraph, so it
must bound its own size: object diffs are taken in order and one that does not
fit is skipped, with a count, exactly like the main "Changes" section.
"""

from __future__ import annotations

from bot.deploy.live_diff import LiveDiff
from bot.models import ObjectChange
from bot.report.changes import diff_body
from bot.report.escape import code, code_block, html_code, html_text, text, truncate
from bot.report.words import change_counts, change_name, plural

DEFAULT_LIVE_BUDGET = 16_000
HEADING = (
    "### Live cluster\n\n"
    "_What applying this head would change in the cluster now (server-side dry run by the "
    "puller; Secrets masked)._\n\n"
)
IN_SYNC = "in sync with the live cluster"
PROBLEM_LIMIT = 300
_CLOSING = "</details>\n\n"
# Room kept per app for its "… n object diffs omitted" line.
_APP_NOTE_RESERVE = 80


def render_live_section(diffs: list[LiveDiff], budget: int = DEFAULT_LIVE_BUDGET) -> str:
    """Markdown for ``diffs`` in at most ``budget`` characters ("" without apps).

    One line per app without changes (in sync, not managed, unavailable) comes
    first and always fits; the ``<details>`` with diffs fill what is left."""
    if not diffs:
        return ""
    lines = [_status_line(d) for d in diffs if d.problem is not None or not d.changes]
    head = HEADING + "".join(lines) + ("\n" if lines else "")
    if len(head) > budget:
        return truncate(
            HEADING + f"_{plural(len(diffs), 'app')}: live diffs omitted (budget)_\n", budget
        )
    room = budget - len(head)
    sections: list[str] = []
    for diff in diffs:
        if diff.problem is None and diff.changes:
            section = _app_section(diff.app, diff.changes, room)
            sections.append(section)
            room -= len(section)
    return head + "".join(sections)


def _status_line(diff: LiveDiff) -> str:
    what = IN_SYNC if diff.problem is None else truncate(diff.problem, PROBLEM_LIMIT)
    return f"- {code(diff.app)}: {text(what)}\n"


def _app_section(app: str, changes: tuple[ObjectChange, ...], room: int) -> str:
    opening = (
        f"<details><summary>{html_code(app)}: {html_text(change_counts(changes))} against the "
        "live cluster</summary>\n\n"
    )
    omitted = f"- {code(app)}: {plural(len(changes), 'live object diff')} omitted (budget)\n"
    if room - len(opening) - len(_CLOSING) - _APP_NOTE_RESERVE < len(omitted):
        return omitted if len(omitted) <= room else ""
    room -= len(opening) + len(_CLOSING) + _APP_NOTE_RESERVE
    blocks: list[str] = []
    for change in changes:
        block = _object_block(change)
        if len(block) <= room:
            blocks.append(block)
            room -= len(block)
    left_out = len(changes) - len(blocks)
    if left_out:
        blocks.append(f"_… {plural(left_out, 'live object diff')} omitted (budget)_\n\n")
    return opening + "".join(blocks) + _CLOSING


def _object_block(change: ObjectChange) -> str:
    header = f"**{text(change.action)}** {code(change_name(change))}"
    body = diff_body(change.diff) or "(no textual difference)\n"
    return f"{header}\n\n{code_block(body, 'diff')}\n"

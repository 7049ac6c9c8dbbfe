"""The full report page: every diff, uncut, with the policy, signature and approval
state and the JSON alongside. Rendered by Jinja2 with autoescaping on, so nothing
from a repository can become markup."""

from __future__ import annotations

import re
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, select_autoescape

from bot.models import Report
from bot.report import state
from bot.report.changes import diff_body
from bot.report.context import CommentContext
from bot.report.escape import visible
from bot.report.words import change_counts, change_name, short_sha

_SLUG = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add" | "del" | "hunk" | "ctx"
    text: str


def _lines(diff: str) -> list[DiffLine]:
    out = []
    for line in visible(diff_body(diff), keep_tabs=True).splitlines():
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "ctx")
        out.append(DiffLine(kind, line))
    return out


def _anchor(name: str, index: int) -> str:
    """A stable id per app; the index keeps two names that slug alike apart."""
    return f"app-{index}-{_SLUG.sub('-', name.lower()).strip('-')[:60]}"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("bot.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["visible"] = lambda value: visible(str(value or ""))
    env.filters["short"] = short_sha
    return env


def render_html(report: Report, json_text: str, *, title: str, context: CommentContext) -> str:
    """The page for ``report``; ``json_text`` is the JSON report shown alongside."""
    apps = []
    for index, app in enumerate(report.apps):
        apps.append(
            {
                "name": app.name,
                "anchor": _anchor(app.name, index),
                "status": app.status,
                "counts": change_counts(app.changes) or "no changes",
                "policy": state.POLICY_STATE.get(state.policy_state(app, report), "error"),
                "blocking": state.is_blocking(app),
                "error": app.error,
                "policy_error": app.policy.error,
                "changes": [
                    {"action": c.action, "name": change_name(c), "lines": _lines(c.diff)}
                    for c in app.changes
                ],
            }
        )
    return (
        _environment()
        .get_template("report.html")
        .render(
            title=title,
            report=report,
            verdict=state.headline_words(report),
            apps=apps,
            denies=state.violations(report, "deny"),
            warnings=state.violations(report, "warn"),
            override=state.override_note(report),
            errors=state.render_errors(report),
            bad_commits=state.bad_commits(report),
            context=context,
            json_text=json_text,
        )
    )

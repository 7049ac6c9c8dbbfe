"""The report in its two forms: JSON (machines) and the Markdown PR comment.

Both come from the same :class:`bot.models.Report`; this package never calls a forge.
"""

from __future__ import annotations

import json

from bot.models import Report
from bot.report.context import Approvals, CommentContext, forge_budget
from bot.report.markdown import DEFAULT_BUDGET, MARKER, headline, render_markdown


def to_json(report: Report) -> str:
    """The JSON report: the shape documented in DESIGN.md, indented, key order fixed."""
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False)


__all__ = [
    "DEFAULT_BUDGET",
    "MARKER",
    "Approvals",
    "CommentContext",
    "forge_budget",
    "headline",
    "render_markdown",
    "to_json",
]

"""What the comment needs to know beyond the :class:`Report`: where the full report
lives, when the comment was made, the repository's rules for the next steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# The forges' own limits on one comment body, in characters (codepoints):
# GitHub refuses "Body is too long (maximum is 65536 characters)"; GitLab validates
# notes against Gitlab::Database::MAX_TEXT_SIZE_LIMIT = 1,000,000.
FORGE_LIMITS = {"github": 65_536, "gitlab": 1_000_000}


def forge_budget(forge: str) -> int:
    """The comment budget for ``forge`` (the smallest limit for an unknown one)."""
    return FORGE_LIMITS.get(forge, min(FORGE_LIMITS.values()))


@dataclass(frozen=True)
class Approvals:
    """Approvals of exactly ``sha`` that count toward the merge gate."""

    given: int
    required: int
    sha: str


@dataclass(frozen=True)
class CommentContext:
    # The full report page (``SLUICE_PUBLIC_URL/reports/<token>``), if one is served.
    report_url: str | None = None
    made_at: datetime | None = None
    # A newer head whose preview is running: the comment says it is out of date.
    previewing: str | None = None
    # Who may run /approve-policy on this repository, in words (from its rules).
    approve_policy_who: str = ""
    approvals: Approvals | None = None

    def full_report(self) -> str:
        """How to reach everything the comment leaves out, as a Markdown phrase."""
        if self.report_url:
            return f"the [full report]({self.report_url})"
        return "the JSON report (`sluice preview --format json`)"

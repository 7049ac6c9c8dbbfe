"""A verdict on one commit, with how long it may be reused."""

from __future__ import annotations

from dataclasses import dataclass

from bot.models import CommitCheck


@dataclass(frozen=True)
class Checked:
    """``check`` stays true until ``valid_until`` (epoch seconds; None: forever).

    Only a "valid" verdict can change on its own (a key or signature expires);
    every other verdict changes only with the trust set, which keys the cache.
    """

    check: CommitCheck
    valid_until: float | None = None

"""The verified frontier: per repository, the commits whose whole history the puller has checked.

The frontier is a short list of tips. Every commit reachable from a tip (or from the
operator's ``trust_anchor``) counts as verified; a revision is checked over the commits
reachable from it and from none of those. The list, not a single commit, because a
rollback or a preview-deploy can name a commit that is not a descendant of the last one.

Storage sits behind :class:`FrontierStore` so the tips can move from the data dir into
the cluster later without touching the verification.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Protocol

# A preview-deploy per PR head adds a tip; past this many the oldest are forgotten.
# Forgetting a tip only makes later checks look at more commits, never fewer.
MAX_TIPS = 32
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)


class StateStore(Protocol):
    """A durable key/value table (the puller's :class:`~bot.puller.history.HistoryStore`)."""

    def get_state(self, key: str) -> str | None: ...

    def set_state(self, key: str, value: str) -> None: ...


class FrontierStore(Protocol):
    """Where the verified tips of each repository are kept between cycles and restarts."""

    def load(self, repository: str) -> list[str]: ...

    def save(self, repository: str, tips: list[str]) -> None: ...


class StateFrontierStore:
    """The tips as one JSON list per repository in a key/value store.

    The key is a hash of the repository URL without credentials, so a token in the URL
    is never stored, and pointing the puller at another repository starts from its anchor.
    """

    def __init__(self, state: StateStore) -> None:
        self._state = state

    @staticmethod
    def key(repository: str) -> str:
        bare = _USERINFO.sub(r"\1", repository.strip()).rstrip("/")
        return "frontier:" + hashlib.sha256(bare.encode()).hexdigest()[:32]

    def load(self, repository: str) -> list[str]:
        raw = self._state.get_state(self.key(repository))
        if raw is None:
            return []
        tips = json.loads(raw)
        return [tip for tip in tips if isinstance(tip, str)]

    def save(self, repository: str, tips: list[str]) -> None:
        self._state.set_state(self.key(repository), json.dumps(tips[-MAX_TIPS:]))

"""What the puller knows about each app between cycles: its state, its lock, and the table of both.

``AppState.to_dict`` is PULLER_API.md's AppStatus. A state is created on first use and
starts from the history store, so a restarted puller knows what it deployed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.deploy.ledger import LedgerEntry
from bot.models import App, K8sObject, ObjectChange
from bot.puller.history import HistoryStore, LastResult


@dataclass
class AppState:
    """What the puller knows about one app; ``to_dict`` is PULLER_API.md's AppStatus."""

    name: str
    revision: str | None = None
    ledger_commit: str | None = None
    desired_revision: str | None = None
    phase: str = "Idle"
    health: str = "Unknown"
    message: str = ""
    pr: int | None = None
    drift: list[ObjectChange] = field(default_factory=list)
    # The deployed revision's app definition and rendered objects (for drift checks).
    app: App | None = None
    objects: list[K8sObject] | None = None
    drift_reported: tuple[tuple[str, ...], ...] | None = None
    refusal: tuple[str | None, str | None, str] | None = None

    def to_dict(self, history: list[LastResult]) -> dict[str, Any]:
        return {
            "name": self.name,
            "revision": self.revision,
            "ledger_commit": self.ledger_commit,
            "desired_revision": self.desired_revision,
            "phase": self.phase,
            "health": self.health,
            "message": self.message,
            "drift": [change.to_dict() for change in self.drift],
            "last_result": history[0].to_dict() if history else None,
            "history": [result.to_dict() for result in history],
        }

    def deployed_entry(self) -> LedgerEntry:
        """The deployed revision as a ledger entry (a sync re-applies it)."""
        assert self.revision is not None
        return LedgerEntry(app=self.name, revision=self.revision, action="deploy", pr=self.pr)


class AppLocks:
    """One lock per app: a deploy, a sync and a drift fix of one app never overlap."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextmanager
    def hold(self, app: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(app, threading.Lock())
        with lock:
            yield


class AppStates:
    """Every app's state, created on first use from what the history store recorded."""

    def __init__(self, store: HistoryStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._states: dict[str, AppState] = {}

    def get(self, app: str) -> AppState:
        with self._lock:
            state = self._states.get(app)
            if state is None:
                state = AppState(name=app)
                last = self._store.last_applied(app)
                if last is not None:
                    state.revision = last.revision
                    state.ledger_commit = last.ledger_commit
                    state.pr = last.pr
                    state.health = last.health
                    state.phase = "Synced" if last.result == "succeeded" else "Failed"
                self._states[app] = state
            return state

    def known(self) -> list[str]:
        with self._lock:
            return sorted(self._states)

    def __contains__(self, app: str) -> bool:
        with self._lock:
            return app in self._states


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

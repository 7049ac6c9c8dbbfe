"""Deploy and drift events to the bot: ``POST {SLUICE_BOT_EVENTS_URL}`` with the bearer.

Events go through the durable outbox in :class:`~bot.puller.history.HistoryStore`:
a bot that is down or slow never blocks a deploy, and what it missed is sent,
in order, at the start of a later cycle.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from bot.puller.history import HistoryStore

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0
_POISON = frozenset({400, 413, 422})


class EventReporter:
    def __init__(
        self,
        store: HistoryStore,
        url: str | None,
        token: str | None,
        *,
        session: requests.Session | None = None,
    ) -> None:
        self.store = store
        self.url = url
        self._token = token
        self._session = session or requests.Session()

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def send(self, event: dict[str, Any]) -> None:
        """Queue ``event`` and try to deliver everything pending."""
        if not self.enabled:
            return
        self.store.enqueue_event(event)
        self.flush()

    def flush(self) -> int:
        """Deliver pending events oldest first; stop at the first failure. Returns how many."""
        if not self.enabled:
            return 0
        sent = 0
        for event_id, event in self.store.pending_events():
            if not self._post(event):
                self.store.event_failed(event_id)
                break
            self.store.event_sent(event_id)
            sent += 1
        return sent

    def _post(self, event: dict[str, Any]) -> bool:
        assert self.url is not None
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            response = self._session.post(self.url, json=event, headers=headers, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            log.warning(
                "cannot report %s event to the bot: %s", event.get("type"), type(exc).__name__
            )
            return False
        if response.status_code in _POISON:
            # The bot will never take this event; holding it would block every later one.
            log.warning(
                "the bot refused a %s event with %s; dropped",
                event.get("type"),
                response.status_code,
            )
            return True
        if response.status_code >= 300:
            log.warning(
                "the bot answered %s to a %s event; will retry next cycle",
                response.status_code,
                event.get("type"),
            )
            return False
        return True

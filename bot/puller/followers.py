"""What a replica that does not lead can still do: answer from the cluster, pass wakes on.

With leader election on, the leader publishes each app's status into the cluster store
after every reconcile; a follower serves ``GET /v1/apps`` from there and forwards
``POST /v1/wake`` to the leader's advertised URL (read from the Lease). Without an
elector this replica always leads and nothing here does anything.
"""

from __future__ import annotations

from typing import Any

import requests

from bot.puller.leader import LeaderElector
from bot.puller.state import AppState

WAKE_TIMEOUT_S = 5.0


class WakeNotDelivered(Exception):
    """A follower could not pass a wake on to the leader."""


class Followers:
    def __init__(self, elector: LeaderElector | None, token: str | None) -> None:
        self._elector = elector
        self._token = token

    @property
    def leading(self) -> bool:
        return self._elector is None or self._elector.is_leader

    def start(self) -> None:
        if self._elector is not None:
            self._elector.start()

    def stop(self) -> None:
        if self._elector is not None:
            self._elector.stop(release=True)

    @property
    def retry_s(self) -> float:
        return self._elector.timings.retry_s if self._elector is not None else 1.0

    def publish(self, store: Any, state: AppState) -> None:
        """The leader's view of one app, for the replicas that do not lead."""
        if self._elector is None:
            return
        status = state.to_dict([])
        del status["history"], status["last_result"]
        store.publish_status(state.name, status)

    def status(self, store: Any, app: str) -> dict[str, Any] | None:
        published = store.published_status(app)
        history = store.history(app)
        if published is None and not history:
            return None
        status = dict(published or {"name": app, "phase": "Unknown", "drift": []})
        status["last_result"] = history[0].to_dict() if history else None
        status["history"] = [result.to_dict() for result in history]
        return status

    def forward_wake(self, app: str | None) -> list[str]:
        assert self._elector is not None
        url = self._elector.leader_url()
        if not url:
            raise WakeNotDelivered("no puller replica leads yet; try again in a few seconds")
        try:
            response = requests.post(
                f"{url.rstrip('/')}/v1/wake",
                json={"app": app} if app else {},
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=WAKE_TIMEOUT_S,
            )
        except requests.RequestException as exc:
            raise WakeNotDelivered(
                f"the leading replica at {url} did not answer ({type(exc).__name__})"
            ) from None
        if response.status_code != 202:
            raise WakeNotDelivered(
                f"the leading replica at {url} answered HTTP {response.status_code}"
            )
        queued = (response.json() or {}).get("queued") or []
        return [str(name) for name in queued]

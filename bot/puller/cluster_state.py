"""The puller's durable state kept in the cluster, so it survives a leader change.

With leader election on, results (the history of each app), the small key/value state
(the last ledger commit acted on, the verified frontier) and each app's published status
(phase, health, message, drift) live in ConfigMaps in the puller's namespace instead of
the pod's SQLite file. Only the leader writes them (server-side apply, field manager
``sluice-puller-state``); every replica reads them, which is how a follower answers
``GET /v1/apps``. The event outbox stays per pod: it holds what that pod still has to tell
the bot.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bot.puller.cluster import Cluster
from bot.puller.history import LastResult

Json = dict[str, Any]
FIELD_MANAGER = "sluice-puller-state"
HISTORY_PREFIX = "sluice-history-"
STATE_NAME = "sluice-puller-state"
_RESULTS_KEY = "results.json"
_STATUS_KEY = "status.json"
_KEY_CHARS = re.compile(r"[^-._a-zA-Z0-9]")


class ClusterHistoryStore:
    """History and state in ConfigMaps; the same reads and writes as ``HistoryStore``."""

    def __init__(self, cluster: Cluster, namespace: str, *, limit: int = 10) -> None:
        if limit < 1:
            raise ValueError("history limit must be at least 1")
        self.cluster = cluster
        self.namespace = namespace
        self.limit = limit

    # -- results

    def record(self, app: str, result: LastResult, *, applied: bool) -> None:
        rows = self._rows(app)
        rows.insert(0, {"applied": applied, "result": result.to_dict()})
        self._write(
            _history_name(app), {_RESULTS_KEY: json.dumps(rows[: self.limit], sort_keys=True)}
        )

    def history(self, app: str) -> list[LastResult]:
        return [LastResult.from_dict(row["result"]) for row in self._rows(app)[: self.limit]]

    def last_applied(self, app: str) -> LastResult | None:
        for row in self._rows(app)[: self.limit]:
            if row.get("applied"):
                return LastResult.from_dict(row["result"])
        return None

    # -- small durable state

    def get_state(self, key: str) -> str | None:
        return self._data(STATE_NAME).get(_state_key(key))

    def set_state(self, key: str, value: str) -> None:
        if self.get_state(key) != value:  # a no-op cycle writes nothing
            self._write(STATE_NAME, {_state_key(key): value})

    # -- published app status (for replicas that do not lead)

    def publish_status(self, app: str, status: Json) -> None:
        body = json.dumps(status, sort_keys=True)
        if self._data(_history_name(app)).get(_STATUS_KEY) != body:
            self._write(_history_name(app), {_STATUS_KEY: body})

    def published_status(self, app: str) -> Json | None:
        raw = self._data(_history_name(app)).get(_STATUS_KEY)
        return json.loads(raw) if raw else None

    def published_apps(self) -> list[str]:
        resource = self.cluster.resource("v1", "ConfigMap")
        items = self.cluster.list(resource, label_selector=f"{_ROLE_LABEL}=history")
        return sorted(
            item["metadata"]["name"].removeprefix(HISTORY_PREFIX)
            for item in items
            if item["metadata"].get("namespace") == self.namespace
        )

    # -- ConfigMaps

    def _rows(self, app: str) -> list[Json]:
        raw = self._data(_history_name(app)).get(_RESULTS_KEY)
        return json.loads(raw) if raw else []

    def _data(self, name: str) -> dict[str, str]:
        resource = self.cluster.resource("v1", "ConfigMap")
        found = self.cluster.get(resource, name, self.namespace)
        return dict((found or {}).get("data") or {})

    def _write(self, name: str, changes: dict[str, str]) -> None:
        """Apply the whole ``data`` map: server-side apply drops keys this manager owned
        and left out, so every key is sent each time."""
        data = {**self._data(name), **changes}
        role = "history" if name.startswith(HISTORY_PREFIX) else "state"
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "sluice", _ROLE_LABEL: role},
            },
            "data": data,
        }
        self.cluster.apply(
            self.cluster.resource("v1", "ConfigMap"), body, field_manager=FIELD_MANAGER, force=True
        )


_ROLE_LABEL = "sluice.dev/puller-state"


def _history_name(app: str) -> str:
    return f"{HISTORY_PREFIX}{app}"


def _state_key(key: str) -> str:
    """ConfigMap keys allow ``[-._a-zA-Z0-9]``: ``frontier:ab12`` becomes ``frontier.ab12``."""
    return _KEY_CHARS.sub(".", key)

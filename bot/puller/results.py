"""Where outcomes go besides the app's state: the bot hears of each result and of drift changes.

Drift is reported once per distinct set of changes, and the drift gauge follows it.
"""

from __future__ import annotations

from bot.models import ObjectChange
from bot.puller.events import EventReporter
from bot.puller.history import LastResult
from bot.puller.metrics import PullerMetrics
from bot.puller.state import AppState


class Results:
    """Sends results and drift to the bot (through the outbox) and keeps the drift gauge."""

    def __init__(self, reporter: EventReporter, metrics: PullerMetrics) -> None:
        self.reporter = reporter
        self.metrics = metrics

    def send_result(self, app: str, result: LastResult) -> None:
        self.reporter.send(
            {
                "type": "deploy",
                "app": app,
                "ledger_commit": result.ledger_commit or None,
                "revision": result.revision or None,
                "pr": result.pr,
                "result": result.to_dict(),
            }
        )

    def publish_drift(self, state: AppState, drift: list[ObjectChange]) -> None:
        state.drift = drift
        self.metrics.drift(state.name, len(drift))
        signature = tuple(
            (c.action, c.api_version, c.kind, c.namespace or "", c.name, c.diff) for c in drift
        )
        if state.drift_reported == signature or (state.drift_reported is None and not drift):
            state.drift_reported = signature
            return
        state.drift_reported = signature
        self.reporter.send(
            {
                "type": "drift",
                "app": state.name,
                "revision": state.revision,
                "pr": state.pr,
                "drift": [change.to_dict() for change in drift],
            }
        )

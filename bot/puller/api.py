"""The puller's HTTP API (PULLER_API.md): wake, status, live diff, health and metrics.

Every ``/v1`` route needs ``Authorization: Bearer <SLUICE_PULLER_TOKEN>``,
compared in constant time. A wake-up only queues a cycle and answers 202 at
once: the cycle runs in the agent's loop thread and deploys only what the
signed ledger names.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Flask, Response, jsonify, request

from bot.puller.agent import PullerAgent
from bot.puller.cluster import ClusterError
from bot.puller.followers import WakeNotDelivered
from bot.puller.plan import PlanError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_DIFF_OBJECTS = 10_000


def create_puller_app(agent: PullerAgent, token: str) -> Flask:
    if not token:
        raise ValueError("the puller API needs a bearer token (SLUICE_PULLER_TOKEN)")
    expected = token.encode()
    app = Flask("sluice-puller")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.before_request
    def _authenticate() -> Any:
        if not request.path.startswith("/v1/"):
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return _error(401, "missing or wrong bearer token")
        return None

    @app.post("/v1/wake")
    def wake() -> Any:
        body = _json_body()
        if body is None:
            return _error(400, 'body must be a JSON object: {} or {"app": "<name>"}')
        name = body.get("app")
        if name is not None:
            if not isinstance(name, str) or not name:
                return _error(400, "app: must be a non-empty string")
            if not agent.owns(name):
                return _error(404, f"this puller does not own app {name!r}")
        try:
            queued = agent.wake(name)
        except WakeNotDelivered as exc:
            return _error(503, str(exc))
        return jsonify({"queued": queued}), 202

    @app.get("/v1/apps")
    def apps() -> Any:
        return jsonify({"apps": agent.statuses()})

    @app.get("/v1/apps/<name>")
    def app_status(name: str) -> Any:
        status = agent.status(name)
        if status is None:
            return _error(404, f"no app {name!r} known to this puller")
        return jsonify(status)

    @app.post("/v1/diff")
    def diff() -> Any:
        body = _json_body()
        if body is None:
            return _error(400, "body must be a JSON object with app and objects")
        name, objects = body.get("app"), body.get("objects")
        if not isinstance(name, str) or not name:
            return _error(400, "app: must be a non-empty string")
        if not agent.owns(name):
            return _error(404, f"this puller does not own app {name!r}")
        if not isinstance(objects, list) or not all(_is_object(o) for o in objects):
            return _error(400, "objects: must be a list of Kubernetes objects")
        if len(objects) > MAX_DIFF_OBJECTS:
            return _error(413, f"objects: at most {MAX_DIFF_OBJECTS} objects")
        try:
            changes = agent.diff(name, objects)
        except PlanError as exc:
            return _error(400, str(exc))
        except ClusterError as exc:
            return _error(502, f"the cluster could not answer: {exc}")
        return jsonify({"app": name, "changes": [change.to_dict() for change in changes]})

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Any:
        problems = agent.readiness()
        if problems:
            return jsonify({"status": "unready", "problems": problems}), 503
        return jsonify({"status": "ready"})

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = agent.metrics.render()
        return Response(body, content_type=content_type)

    return app


def _json_body() -> dict[str, Any] | None:
    body = request.get_json(silent=True) if request.content_length else {}
    return body if isinstance(body, dict) else None


def _is_object(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("apiVersion"), str)
        and isinstance(value.get("kind"), str)
        and isinstance(value.get("metadata"), dict)
        and isinstance(value["metadata"].get("name"), str)
    )


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status

"""The webhook intake: authenticate, dedupe, persist, answer 202.

Nothing slow happens inside a request: no forge call, clone or render. A valid
delivery becomes one row in the job queue and the worker pool does the rest.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from bot.config.server import ServerConfig
from bot.deploy.puller_client import puller_event_problem
from bot.forge import webhooks
from bot.forge.webhooks import (
    CommentEvent,
    Delivery,
    PullRequestEvent,
    PushEvent,
    Unsupported,
    WebhookError,
)
from bot.server.metrics import Metrics
from bot.server.reports import add_report_routes, open_pages
from bot.server.storage import StorageError
from bot.server.storage.queue import JobQueue, NewJob

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 25 * 1024 * 1024
Readiness = Callable[[], tuple[bool, str]]

_PREVIEW_ACTIONS = {"opened", "synchronize", "reopened", "ready_for_review", "edited"}
# Event header values used as metric labels; anything else is "other" (bounded cardinality).
_KNOWN_EVENTS = {
    "github": {"pull_request", "issue_comment", "ping", "push"},
    "gitlab": {"Merge Request Hook", "Note Hook", "Push Hook"},
}


def create_app(
    config: ServerConfig,
    queue: JobQueue,
    metrics: Metrics,
    readiness: Readiness | None = None,
    *,
    on_enqueued: Callable[[int], None] | None = None,
) -> Flask:
    """The Flask app. ``readiness`` reports (ready, reason) for /readyz;
    ``on_enqueued(job_id)`` is called after each new job (the dev server wakes its pool)."""
    app = Flask("sluice")
    # One byte over the limit: werkzeug silently truncates a chunked body at
    # MAX_CONTENT_LENGTH, so reading that extra byte is how an oversized one shows.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES + 1
    ready = readiness or queue.ping

    @app.post("/webhooks/<forge>")
    def intake(forge: str) -> tuple[Response, int]:
        if forge not in ("github", "gitlab"):
            return _error("unknown forge", 404)
        event_label = _event_label(forge)
        if not config.forge_enabled(forge):
            reason = config.disabled.get(forge, f"{forge} is not enabled")
            metrics.webhook(forge, event_label, "disabled")
            status = 503 if forge in config.misconfigured else 404
            return _error(f"{forge} webhooks are disabled: {reason}", status)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            # Answered from the header alone: the body is never read.
            metrics.webhook(forge, event_label, "too_large")
            return _error(f"body larger than {MAX_BODY_BYTES} bytes", 413)
        body = _read_body(MAX_BODY_BYTES)
        if body is None:
            metrics.webhook(forge, event_label, "too_large")
            return _error(f"body larger than {MAX_BODY_BYTES} bytes", 413)
        try:
            delivery = _authenticate_and_parse(config, forge, body)
        except WebhookError as exc:
            result = "unauthorized" if exc.status == 401 else "malformed"
            metrics.webhook(forge, event_label, result)
            log.warning("rejected %s webhook (%s): %s", forge, result, exc)
            return _error(str(exc), exc.status)
        return _accept(config, queue, metrics, delivery, event_label, on_enqueued)

    @app.post("/v1/puller/events")
    def puller_event() -> tuple[Response, int]:
        return _accept_puller_event(config, queue, on_enqueued)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> tuple[Response, int]:
        return _error(f"body larger than {MAX_BODY_BYTES} bytes", 413)

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify(status="ok"), 200

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        ok, reason = ready()
        return jsonify(status="ready" if ok else "not ready", reason=reason), 200 if ok else 503

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        text, content_type = metrics.render()
        return Response(text, content_type=content_type)

    shared = queue.database if config.storage.replicated else None
    add_report_routes(app, open_pages(config.data_dir, database=shared))

    return app


def _read_body(limit: int) -> bytes | None:
    """The request body, or None if it is longer than ``limit`` (chunked uploads)."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = request.stream.read(min(1024 * 1024, limit + 1 - size))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
    return None


def _authenticate_and_parse(config: ServerConfig, forge: str, body: bytes) -> Delivery:
    secret = config.webhook_secret(forge)
    if secret is None:  # unreachable while the forge is enabled; fail closed regardless
        raise webhooks.SignatureError(f"{forge} has no webhook secret")
    if forge == "github":
        webhooks.verify_github_signature(secret, body, request.headers.get("X-Hub-Signature-256"))
        return webhooks.parse_github(request.headers, body)
    webhooks.verify_gitlab_token(secret, request.headers.get("X-Gitlab-Token"))
    return webhooks.parse_gitlab(request.headers, body)


def _accept(
    config: ServerConfig,
    queue: JobQueue,
    metrics: Metrics,
    delivery: Delivery,
    event_label: str,
    on_enqueued: Callable[[int], None] | None,
) -> tuple[Response, int]:
    event = delivery.event
    job = event if isinstance(event, Unsupported) else job_for(config, event)
    if isinstance(job, Unsupported):
        metrics.webhook(delivery.forge, event_label, "ignored")
        log.info("delivery %s (%s): ignored: %s", delivery.delivery_id, event_label, job.reason)
        return jsonify(status="ignored", reason=job.reason), 202
    try:
        job_id = queue.enqueue_delivery(delivery.delivery_id, job)
    except StorageError as exc:
        metrics.webhook(delivery.forge, event_label, "error")
        log.error("delivery %s: could not store it: %s", delivery.delivery_id, exc)
        return _error("the job queue is unavailable; redeliver later", 503)
    if job_id is None:
        metrics.webhook(delivery.forge, event_label, "duplicate")
        log.info("delivery %s (%s): duplicate", delivery.delivery_id, event_label)
        return jsonify(status="duplicate", delivery=delivery.delivery_id), 200
    metrics.webhook(delivery.forge, event_label, "queued")
    log.info(
        "delivery %s (%s): queued job %s (%s %s)",
        delivery.delivery_id,
        event_label,
        job_id,
        job.kind,
        job.pr_key,
    )
    if on_enqueued is not None:
        on_enqueued(job_id)
    return jsonify(status="queued", job=job_id, delivery=delivery.delivery_id), 202


def _accept_puller_event(
    config: ServerConfig, queue: JobQueue, on_enqueued: Callable[[int], None] | None
) -> tuple[Response, int]:
    """A deploy or drift report from the puller becomes a ``puller-event`` job."""
    token = config.puller_token
    if not token:
        return _error("puller events are disabled: SLUICE_PULLER_TOKEN is not set", 503)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return _error("missing or wrong bearer token", 401)
    event = request.get_json(silent=True)
    problem = puller_event_problem(event)
    if problem is not None:
        return _error(problem, 400)
    app_name = event["app"]
    job = NewJob("puller-event", "puller", "puller", f"puller:{app_name}", event)
    try:
        job_id = queue.enqueue(job)
    except StorageError as exc:
        log.error("puller event for %s: could not store it: %s", app_name, exc)
        return _error("the job queue is unavailable; send it again later", 503)
    log.info("puller %s event for %s: queued job %s", event["type"], app_name, job_id)
    if on_enqueued is not None:
        on_enqueued(job_id)
    return jsonify(status="queued", job=job_id), 202


def job_for(
    config: ServerConfig, event: PullRequestEvent | CommentEvent | PushEvent
) -> NewJob | Unsupported:
    """The job a parsed event asks for, or why it asks for none."""
    payload = webhooks.event_to_dict(event)
    if isinstance(event, PushEvent):
        if event.branch != config.repo_settings(event.forge, event.repo.full_name).tracked_branch:
            return Unsupported("push to a branch Sluice does not track")
        if event.created:
            return Unsupported("push created the tracked branch: there is nothing to compare")
        return NewJob(
            "push", event.forge, event.repo.full_name, event.pr_key, payload, head_sha=event.after
        )
    if isinstance(event, CommentEvent):
        if event.action == "deleted":
            return Unsupported("comment deleted")
        if event.author_is_bot or (config.bot_login and event.author == config.bot_login):
            return Unsupported("comment by a bot")
        return NewJob("command", event.forge, event.repo.full_name, event.pr_key, payload)
    if event.action in _PREVIEW_ACTIONS:
        kind = "preview"
    elif event.action in ("closed", "merged"):
        kind = event.action
    else:
        return Unsupported(f"pull request {event.action} needs no work")
    return NewJob(
        kind,
        event.forge,
        event.repo.full_name,
        # Merges of one repository queue in one lane: whichever replica takes them, they
        # deploy one after another in the order they arrived, never out of merge order.
        f"{event.forge}:{event.repo.full_name}#merges" if kind == "merged" else event.pr_key,
        payload,
        head_sha=event.head_sha,
        supersedes=kind == "preview",
    )


def _event_label(forge: str) -> str:
    header = "X-GitHub-Event" if forge == "github" else "X-Gitlab-Event"
    value = request.headers.get(header, "")
    return value if value in _KNOWN_EVENTS.get(forge, ()) else "other"


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify(error=message), status

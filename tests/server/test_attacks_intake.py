"""Hostile clients and jobs against ``sluice serve``: each attack tried for real.

A real ``sluice serve`` process (the intake front, gunicorn and the job pool), real
sockets held open by slow or idle clients, and correctly signed deliveries that carry
oversized numbers or deep nesting.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bot.server.storage.queue import JobQueue, NewJob
from bot.server.worker import WorkerPool, job_deadline_from_env
from tests.botkit import SLUICE, SluiceServer, github_delivery, server_env

DATA = Path(__file__).parents[1] / "data" / "webhooks"
# The shipped liveness and readiness probes' timeoutSeconds (deploy/base/deployment.yaml).
PROBE_TIMEOUT_S = 3.0


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# -- a job that never ends --------------------------------------------------------------------


def test_a_job_past_its_deadline_fails_and_its_lease_is_not_extended(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "sluice.db")
    release = threading.Event()
    given_up: list[str] = []

    def stubborn(job, token) -> None:
        release.wait(30)  # ignores its cancel token, like a render stuck in C code

    pool = WorkerPool(
        queue,
        stubborn,
        size=1,
        lease_s=1.5,
        housekeeping_s=0.1,
        poll_s=0.02,
        job_deadline_s=0.5,
        on_give_up=lambda job, exc: given_up.append(str(exc)),
    )
    key = "github:org/repo#1"
    job_id = queue.enqueue(NewJob("preview", "github", "org/repo", key, {}, head_sha="a" * 40))
    pool.start()
    try:
        started = time.monotonic()
        wait_until(lambda: queue.get(job_id).state == "failed")
        assert time.monotonic() - started < 3
        failed = queue.get(job_id)
        assert failed.lease_expires_at is None
        assert failed.last_error == (
            "job deadline exceeded: still running after 0.5s (SLUICE_JOB_DEADLINE_S)"
        )
        assert given_up == [failed.last_error]
        # The handler is still blocked; housekeeping never extends its lease again.
        time.sleep(0.5)
        assert queue.get(job_id).lease_expires_at is None
        assert queue.get(job_id).state == "failed"
    finally:
        release.set()
        pool.stop(5)


def test_job_deadline_comes_from_the_environment() -> None:
    assert job_deadline_from_env({}) == 1800.0
    assert job_deadline_from_env({"SLUICE_JOB_DEADLINE_S": "90"}) == 90.0
    with pytest.raises(ValueError, match="SLUICE_JOB_DEADLINE_S: must be a positive number"):
        job_deadline_from_env({"SLUICE_JOB_DEADLINE_S": "-1"})


# -- slow and idle clients against a real `sluice serve` --------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SluiceServer]:
    root = tmp_path_factory.mktemp("serve")
    # A GitHub API nobody answers: deliveries are queued; the jobs' outcome is not the point.
    env = server_env(root / "data", github_url="http://127.0.0.1:9", SLUICE_WORKERS="1")
    server = SluiceServer(env, root / "serve.log").start()
    try:
        yield server
    finally:
        server.stop()


def _opened(number: int) -> dict:
    payload = json.loads((DATA / "github_pull_request_opened.json").read_text())
    payload["pull_request"]["number"] = number
    return payload


def _hold(server: SluiceServer, count: int, *, body_started: bool) -> list[socket.socket]:
    """``count`` connections that send nothing, or headers and a trickle of a body."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        if body_started:
            sock.sendall(
                b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'X-GitHub-Event: pull_request\r\nContent-Length: 100000\r\n\r\n{"a": '
            )
        held.append(sock)
    return held


def test_idle_and_slow_body_clients_cannot_starve_health_or_deliveries(
    served: SluiceServer,
) -> None:
    held = _hold(served, 50, body_started=False) + _hold(served, 50, body_started=True)
    try:
        time.sleep(1.0)  # long enough for every held connection to reach the server
        for attempt in range(3):
            started = time.monotonic()
            health = requests.get(f"{served.url}/healthz", timeout=PROBE_TIMEOUT_S)
            assert health.status_code == 200
            assert time.monotonic() - started < 1.0, attempt
        started = time.monotonic()
        delivery = served.github("pull_request", _opened(41))
        assert delivery.status_code == 202, delivery.text
        assert time.monotonic() - started < PROBE_TIMEOUT_S
        for sock in held[50:60]:
            sock.sendall(b"1")  # still trickling
        ready = requests.get(f"{served.url}/readyz", timeout=PROBE_TIMEOUT_S)
        assert ready.status_code in (200, 503)  # answered, whatever the pool's state
    finally:
        for sock in held:
            sock.close()


def test_a_body_that_never_finishes_is_answered_408(served: SluiceServer) -> None:
    [sock] = _hold(served, 1, body_started=True)
    try:
        sock.settimeout(40)
        answer = sock.recv(4096).decode()
    finally:
        sock.close()
    assert answer.startswith("HTTP/1.1 408")
    assert "request body not received within 20s" in answer


def test_a_connection_that_sends_nothing_is_closed(served: SluiceServer) -> None:
    [sock] = _hold(served, 1, body_started=False)
    try:
        sock.settimeout(30)
        started = time.monotonic()
        assert sock.recv(4096) == b""
        assert time.monotonic() - started < 15
    finally:
        sock.close()


# -- signed deliveries with hostile JSON ----------------------------------------------------


def test_a_5000_digit_number_in_a_signed_delivery_is_a_400(served: SluiceServer) -> None:
    text = json.dumps(_opened(42)).replace('"number": 42', '"number": ' + "9" * 5000, 1)
    response = served.session.post(
        f"{served.url}/webhooks/github",
        **github_delivery("pull_request", None, body=text.encode()),
        timeout=PROBE_TIMEOUT_S,
    )
    assert response.status_code == 400
    assert response.json() == {"error": "body JSON has a number with too many digits"}


def test_100k_deep_json_in_a_signed_delivery_is_a_400(served: SluiceServer) -> None:
    body = b'{"action": "opened", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = served.session.post(
        f"{served.url}/webhooks/github",
        **github_delivery("pull_request", None, body=body),
        timeout=PROBE_TIMEOUT_S,
    )
    assert response.status_code == 400
    assert response.json() == {"error": "body JSON is nested too deeply"}
    # And the server is fine afterwards.
    assert requests.get(f"{served.url}/healthz", timeout=PROBE_TIMEOUT_S).status_code == 200


def test_a_bad_limit_stops_sluice_serve_at_start(tmp_path: Path) -> None:
    env = server_env(tmp_path / "data", SLUICE_PREVIEW_MAX_APPS="lots")
    proc = subprocess.run(
        [str(SLUICE), "serve", "--bind", "127.0.0.1:9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "SLUICE_PREVIEW_MAX_APPS: must be a positive number, got 'lots'" in proc.stderr


def test_an_oversized_chunked_body_is_refused_by_the_front(served: SluiceServer) -> None:
    """No Content-Length to refuse up front: the front stops reading at the limit."""
    chunk = b"x" * (1024 * 1024)

    def body() -> Iterator[bytes]:
        for _ in range(30):  # 30 MiB, over the 25 MiB limit
            yield chunk

    response = served.session.post(
        f"{served.url}/webhooks/github",
        data=body(),
        headers={"X-GitHub-Event": "pull_request"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"].startswith("body larger than")

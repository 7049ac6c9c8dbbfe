"""The webhook intake over real HTTP on 127.0.0.1: werkzeug in a thread, and real
gunicorn (``sluice serve``'s production mode) in a subprocess."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from bot.config.server import ServerConfig
from bot.forge.webhooks import PullRequestEvent, event_from_dict, github_signature
from bot.server.metrics import Metrics
from bot.server.storage.queue import JobQueue
from bot.server.web import MAX_BODY_BYTES, create_app

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parents[1] / "data" / "webhooks"
GH_SECRET = "gh-hook-secret-4c1f9e"
GH_TOKEN = "ghp_tokenvalue_never_logged_123456"
GL_SECRET = "gl-hook-secret-77aa01"
GL_TOKEN = "glpat-tokenvalue-never-logged"
SECRETS = (GH_SECRET, GH_TOKEN, GL_SECRET, GL_TOKEN)


def sample(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "SLUICE_DATA_DIR": str(data_dir),
        "SLUICE_GITHUB_WEBHOOK_SECRET": GH_SECRET,
        "SLUICE_GITHUB_TOKEN": GH_TOKEN,
        "SLUICE_GITLAB_URL": "https://gitlab.example.com",
        "SLUICE_GITLAB_TOKEN": GL_TOKEN,
        "SLUICE_GITLAB_WEBHOOK_SECRET": GL_SECRET,
        **extra,
    }


class Intake:
    """A running app: its URL, queue and a switch for /readyz."""

    def __init__(self, url: str, queue: JobQueue):
        self.url = url
        self.queue = queue
        self.ready = (True, "database ok; job workers alive")

    def github(
        self,
        event: str,
        payload: Any,
        delivery: str,
        *,
        secret: str = GH_SECRET,
        body: bytes | None = None,
        signature: str | None = "sign",
    ) -> requests.Response:
        raw = body if body is not None else json.dumps(payload).encode()
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "Content-Type": "application/json",
        }
        if signature == "sign":
            headers["X-Hub-Signature-256"] = github_signature(secret, raw)
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        return requests.post(f"{self.url}/webhooks/github", data=raw, headers=headers, timeout=10)

    def gitlab(self, event: str, payload: Any, delivery: str, token: str | None = GL_SECRET):
        headers = {"X-Gitlab-Event": event, "X-Gitlab-Event-UUID": delivery}
        if token is not None:
            headers["X-Gitlab-Token"] = token
        return requests.post(
            f"{self.url}/webhooks/gitlab", json=payload, headers=headers, timeout=10
        )


def serve_in_thread(app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[Intake]:
    config = ServerConfig.from_env(server_env(tmp_path / "data", SLUICE_BOT_LOGIN="sluice-bot"))
    queue = JobQueue(config.db_path)
    holder: dict[str, Intake] = {}
    app = create_app(config, queue, Metrics(queue), lambda: holder["intake"].ready)
    for url in serve_in_thread(app):
        holder["intake"] = Intake(url, queue)
        yield holder["intake"]


def opened(number: int = 2, head: str | None = None) -> dict[str, Any]:
    payload = sample("github_pull_request_opened.json")
    payload["pull_request"]["number"] = number
    if head:
        payload["pull_request"]["head"]["sha"] = head
    return payload


def pr_comment(body: str, login: str = "Codertocat") -> dict[str, Any]:
    payload = sample("github_issue_comment_created.json")
    payload["issue"]["pull_request"] = {"url": "https://api.github.com/repos/o/r/pulls/1"}
    payload["comment"]["body"] = body
    payload["comment"]["user"]["login"] = login
    return payload


def stored(queue: JobQueue) -> tuple[int, int]:
    with queue.database.read() as tx:
        deliveries = tx.one("SELECT COUNT(*) AS n FROM deliveries")
        jobs = tx.one("SELECT COUNT(*) AS n FROM jobs")
    assert deliveries is not None and jobs is not None
    return int(deliveries["n"]), int(jobs["n"])


# -- intake rules ------------------------------------------------------------------------


def test_valid_delivery_is_persisted_and_acknowledged(intake):
    response = intake.github("pull_request", opened(), "delivery-1")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    (job,) = intake.queue.jobs()
    assert response.json()["job"] == job.id
    assert job.kind == "preview" and job.state == "queued"
    assert job.pr_key == "github:Codertocat/Hello-World#2"
    assert job.head_sha == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    event = event_from_dict(job.payload)
    assert isinstance(event, PullRequestEvent) and event.action == "opened"


def test_duplicate_delivery_is_not_processed_again(intake):
    assert intake.github("pull_request", opened(), "delivery-1").status_code == 202
    again = intake.github("pull_request", opened(), "delivery-1")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert stored(intake.queue) == (1, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"signature": None},
        {"signature": "sha256=" + "0" * 64},
        {"secret": "a guess"},
        {"signature": "sha1=0123"},
    ],
    ids=["missing", "wrong", "other-secret", "sha1"],
)
def test_forged_or_unsigned_delivery_is_rejected_and_nothing_stored(intake, kwargs):
    response = intake.github("pull_request", opened(), "delivery-x", **kwargs)
    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["error"]
    assert stored(intake.queue) == (0, 0)


def test_gitlab_token_is_checked(intake):
    note = sample("gitlab_note_merge_request.json")
    assert intake.gitlab("Note Hook", note, "uuid-1", token=None).status_code == 401
    assert intake.gitlab("Note Hook", note, "uuid-1", token="wrong").status_code == 401
    assert stored(intake.queue) == (0, 0)
    ok = intake.gitlab("Note Hook", note, "uuid-1")
    assert ok.status_code == 202
    (job,) = intake.queue.jobs()
    assert job.kind == "command" and job.pr_key == "gitlab:gitlabhq/gitlab-test#1"
    assert job.head_sha is None


def test_malformed_body_is_a_400(intake):
    bad = intake.github("pull_request", None, "d-1", body=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"] == "body is not valid JSON"
    missing = intake.github("pull_request", {"action": "opened"}, "d-2")
    assert missing.status_code == 400 and "'pull_request' is missing" in missing.json()["error"]
    assert stored(intake.queue) == (0, 0)


def oversized_request(url: str, path: str, headers: dict[str, str]) -> tuple[int, float]:
    """Announce a body over 25 MB, send only 64 KiB of it, and read the answer."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {MAX_BODY_BYTES + 1}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"x" * 65536)
        answer = sock.recv(4096).decode("latin-1")
    return int(answer.split()[1]), time.monotonic() - started


def test_body_over_25_mb_is_refused_before_it_is_read(intake):
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "big"}
    status, elapsed = oversized_request(intake.url, "/webhooks/github", headers)
    assert status == 413
    assert elapsed < 2.0  # answered without waiting for the 25 MB that never comes
    assert stored(intake.queue) == (0, 0)


def test_chunked_body_over_25_mb_is_refused(intake):
    def chunks() -> Iterator[bytes]:
        block = b"x" * (1024 * 1024)
        for _ in range(26):
            yield block

    headers = {
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": "chunked",
        "X-Hub-Signature-256": "sha256=" + "0" * 64,
    }
    try:
        response = requests.post(
            f"{intake.url}/webhooks/github", data=chunks(), headers=headers, timeout=30
        )
    except requests.ConnectionError:
        pytest.fail("the server dropped the connection instead of answering 413")
    assert response.status_code == 413
    assert stored(intake.queue) == (0, 0)


def test_unsupported_events_are_accepted_with_a_reason(intake):
    labeled = intake.github("pull_request", sample("github_pull_request_labeled.json"), "d-1")
    assert labeled.status_code == 202
    assert labeled.json() == {
        "status": "ignored",
        "reason": "pull_request action 'labeled' is not handled",
    }
    ping = intake.github("ping", sample("github_ping.json"), "d-2")
    assert ping.status_code == 202 and ping.json()["reason"].startswith("ping")
    on_issue = intake.github("issue_comment", sample("github_issue_comment_created.json"), "d-3")
    assert on_issue.json()["reason"] == "issue_comment on an issue, not a pull request"
    own = intake.github("issue_comment", pr_comment("<!-- sluice:report -->", "sluice-bot"), "d-4")
    assert own.status_code == 202 and own.json()["reason"] == "comment by a bot"
    assert stored(intake.queue) == (0, 0)


def test_a_new_push_cancels_the_queued_preview_of_the_old_head(intake):
    intake.github("pull_request", opened(head="a" * 40), "d-1")
    sync = opened(head="b" * 40)
    sync["action"] = "synchronize"
    intake.github("pull_request", sync, "d-2")
    intake.github("issue_comment", pr_comment("/sync"), "d-3")
    old, new, command = intake.queue.jobs()
    assert (old.state, new.state, command.state) == ("cancelled", "queued", "queued")


def test_disabled_forge_answers_with_the_reason(tmp_path):
    config = ServerConfig.from_env(
        {"SLUICE_DATA_DIR": str(tmp_path), "SLUICE_GITHUB_TOKEN": GH_TOKEN}
    )
    queue = JobQueue(config.db_path)
    for url in serve_in_thread(create_app(config, queue, Metrics(queue))):
        github = requests.post(f"{url}/webhooks/github", data=b"{}", timeout=5)
        assert github.status_code == 503
        assert "SLUICE_GITHUB_WEBHOOK_SECRET is not set" in github.json()["error"]
        gitlab = requests.post(f"{url}/webhooks/gitlab", data=b"{}", timeout=5)
        assert gitlab.status_code == 404 and "not configured" in gitlab.json()["error"]
        assert requests.post(f"{url}/webhooks/bitbucket", timeout=5).status_code == 404


def test_health_readiness_and_metrics(intake):
    assert requests.get(f"{intake.url}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{intake.url}/readyz", timeout=5).status_code == 200
    intake.ready = (False, "job worker threads have died")
    not_ready = requests.get(f"{intake.url}/readyz", timeout=5)
    assert not_ready.status_code == 503
    assert not_ready.json()["reason"] == "job worker threads have died"

    intake.github("pull_request", opened(number=1), "d-1")
    intake.github("pull_request", opened(number=2), "d-2")
    intake.github("pull_request", opened(number=2), "d-2")
    intake.github("pull_request", opened(), "d-3", signature=None)
    job = intake.queue.claim("w", 30)
    intake.queue.complete(job)
    text = requests.get(f"{intake.url}/metrics", timeout=5).text
    assert 'sluice_webhooks_total{event="pull_request",forge="github",result="queued"} 2.0' in text
    assert 'sluice_webhooks_total{event="pull_request",forge="github",result="duplicate"} 1.0' in (
        text
    )
    assert (
        'sluice_webhooks_total{event="pull_request",forge="github",result="unauthorized"} 1.0'
        in text
    )
    assert "sluice_queue_depth 1.0" in text
    assert 'sluice_jobs_total{kind="preview",result="success"} 1.0' in text
    assert 'sluice_job_duration_seconds_count{kind="preview"} 1.0' in text


def test_two_apps_keep_separate_metrics(tmp_path):
    config = ServerConfig.from_env(server_env(tmp_path))
    queue = JobQueue(config.db_path)
    first, second = Metrics(queue), Metrics(queue)
    first.webhook("github", "pull_request", "queued")
    assert b'result="queued"} 1.0' in first.render()[0]
    assert b'result="queued"' not in second.render()[0]


def test_logs_never_contain_secrets_or_payloads(intake, caplog):
    caplog.set_level(logging.DEBUG)
    marker = "PAYLOAD-MARKER-7f3a"
    payload = opened()
    payload["pull_request"]["title"] = marker
    intake.github("pull_request", payload, "d-1")
    intake.github("pull_request", payload, "d-1")
    intake.github("pull_request", payload, "d-2", secret="forged")
    intake.github("pull_request", None, "d-3", body=f'{{"x": "{marker}"'.encode())
    intake.github("issue_comment", pr_comment(f"/sync {marker}"), "d-4")
    intake.gitlab("Note Hook", sample("gitlab_note_merge_request.json"), "u-1", token="bad")
    assert "delivery d-1" in caplog.text  # intake does log, just not the sensitive parts
    for needle in (*SECRETS, marker):
        assert needle not in caplog.text


# -- production mode: real gunicorn via `sluice serve` -------------------------------------

SERVE_SCRIPT = """
import os, sys
from pathlib import Path
from bot.config.server import ServerConfig
from bot.server.serve import run
from bot.server.worker import JobRunner


def handle(job, token):
    Path(os.environ["MARKERS"], str(job.id)).write_text(str(os.getpid()))


def runner(config):
    return JobRunner(handle)


if __name__ == "__main__":
    config = ServerConfig.from_env(os.environ)
    sys.exit(run(config, sys.argv[1], dev=sys.argv[2:] == ["dev"], runner_factory=runner))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def readyz(url: str) -> int:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code
    except requests.ConnectionError:
        return 0


@contextlib.contextmanager
def sluice_serve(
    tmp_path: Path, *args: str
) -> Iterator[tuple[str, JobQueue, Path, subprocess.Popen]]:
    """Run ``bot.server.serve.run`` in a subprocess, as ``sluice serve`` would."""
    script = tmp_path / "serve_app.py"
    script.write_text(textwrap.dedent(SERVE_SCRIPT))
    markers = tmp_path / "markers"
    markers.mkdir()
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "MARKERS": str(markers),
        **server_env(tmp_path / "data", SLUICE_WORKERS="2"),
    }
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(script), f"127.0.0.1:{port}", *args], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: readyz(url) == 200, 30, "sluice serve to become ready")
        yield url, JobQueue(tmp_path / "data" / "sluice.db"), markers, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log.close()
    # Nothing the serve process wrote may contain a secret.
    output = (tmp_path / "serve.log").read_text()
    for secret in SECRETS:
        assert secret not in output


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, JobQueue, Path, subprocess.Popen]]:
    with sluice_serve(tmp_path) as running:
        yield running


def signed_post(session: requests.Session, url: str, payload: Any, delivery: str):
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": github_signature(GH_SECRET, body),
    }
    return session.post(f"{url}/webhooks/github", data=body, headers=headers, timeout=10)


def test_dev_server_runs_jobs_in_process_and_stops_on_sigterm(tmp_path):
    with sluice_serve(tmp_path, "dev") as (url, queue, markers, process):
        response = signed_post(requests.Session(), url, opened(), "dev-1")
        assert response.status_code == 202
        job_id = response.json()["job"]
        wait_for(lambda: queue.get(job_id).state == "done", 10, "the job")
        assert (markers / str(job_id)).read_text() == str(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert queue.pool_beats() == []  # the pool stopped cleanly


def test_gunicorn_intake_throughput_jobs_restart_and_shutdown(served):
    url, queue, markers, process = served
    bodies = []
    for n in range(300):
        body = json.dumps(opened(number=n % 25 + 1, head=f"{n:040x}")).encode()
        bodies.append((f"bench-{n}", body, github_signature(GH_SECRET, body)))
    session = requests.Session()
    latencies = []
    started = time.perf_counter()
    for delivery, body, signature in bodies:
        t0 = time.perf_counter()
        response = session.post(
            f"{url}/webhooks/github",
            data=body,
            headers={
                "X-GitHub-Event": "pull_request",
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": signature,
            },
            timeout=10,
        )
        latencies.append(time.perf_counter() - t0)
        assert response.status_code == 202, response.text
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(
        f"\ngunicorn intake: {len(bodies) / elapsed:.0f} deliveries/s sequential, "
        f"ack p50 {p50:.1f} ms, p99 {p99:.1f} ms (24 KB signed payloads, jobs running)"
    )
    assert p99 < 1000

    # The jobs run in the separate job process, never in the HTTP worker.
    wait_for(
        lambda: queue.stats().by_state["queued"] == 0 and queue.stats().by_state["running"] == 0,
        60,
        "jobs to finish",
    )
    done = queue.stats()
    assert done.by_state["done"] + done.by_state["cancelled"] == 300
    # A preview flagged as superseded while it ran still ran: it ends "cancelled".
    assert done.by_state["done"] <= len(list(markers.iterdir())) <= 300
    (beat,) = queue.pool_beats()
    pids = {p.read_text() for p in markers.iterdir()}
    assert pids == {str(beat.pid)}

    text = session.get(f"{url}/metrics", timeout=5).text
    assert (
        'sluice_webhooks_total{event="pull_request",forge="github",result="queued"} 300.0' in text
    )
    assert f'sluice_jobs_total{{kind="preview",result="success"}} {done.by_state["done"]}.0' in text

    status, _ = oversized_request(
        url, "/webhooks/github", {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "big"}
    )
    assert status == 413

    # Kill the job process: the supervisor starts a new one and work continues.
    os.kill(beat.pid, signal.SIGKILL)
    wait_for(lambda: any(b.pid != beat.pid for b in queue.pool_beats()), 30, "a new job process")
    body = json.dumps(opened(number=99, head="f" * 40)).encode()
    response = session.post(
        f"{url}/webhooks/github",
        data=body,
        headers={
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": "after-restart",
            "X-Hub-Signature-256": github_signature(GH_SECRET, body),
        },
        timeout=10,
    )
    job_id = response.json()["job"]
    wait_for(lambda: queue.get(job_id).state == "done", 30, "the job after the restart")
    wait_for(lambda: readyz(url) == 200, 30, "readiness after the restart")

    process.send_signal(signal.SIGTERM)
    assert process.wait(40) == 0
    assert readyz(url) == 0  # nothing listens any more

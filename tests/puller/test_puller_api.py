"""The puller's HTTP API over real HTTP on 127.0.0.1, with its loop thread running."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml
from werkzeug.serving import make_server

from bot.puller.api import create_puller_app
from tests import gpgkit
from tests.emulators.kube import Fault
from tests.pullerkit import SECRET_VALUE, TOKEN, Keys, World, manifests, world

AUTH = {"Authorization": f"Bearer {TOKEN}"}
APP_STATUS_KEYS = {
    "name", "revision", "ledger_commit", "desired_revision", "phase", "health", "message",
    "drift", "last_result", "history",
}  # fmt: skip
LAST_RESULT_KEYS = {
    "revision", "ledger_commit", "action", "pr", "result", "health", "created", "updated",
    "unchanged", "pruned", "started_at", "finished_at", "duration_s", "message",
}  # fmt: skip


class Served:
    def __init__(self, w: World) -> None:
        self.w = w
        self.agent = w.agent(interval_s=3600)  # only the first cycle and wake-ups run
        self.server = make_server(
            "127.0.0.1", 0, create_puller_app(self.agent, TOKEN), threaded=True
        )
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.agent.start()

    def stop(self) -> None:
        self.agent.stop()
        self.server.shutdown()

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, headers=kw.pop("headers", AUTH), timeout=10, **kw)

    def post(self, path: str, body: dict, **kw) -> requests.Response:
        headers = kw.pop("headers", AUTH)
        return requests.post(self.url + path, json=body, headers=headers, timeout=10, **kw)

    def wait_for(self, check: Callable[[dict], bool], timeout_s: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.get("/v1/apps/web")
            if status.status_code == 200 and check(status.json()):
                return status.json()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; last status: {status.text}")
            time.sleep(0.05)


@pytest.fixture
def served(tmp_path: Path, keys: Keys) -> Iterator[Served]:
    with world(tmp_path, keys) as w:
        first = gpgkit.git(w.origin, "rev-parse", "HEAD")
        w.record(first)
        s = Served(w)
        s.start()
        try:
            s.wait_for(lambda st: st["revision"] == first and st["phase"] == "Synced")
            yield s
        finally:
            s.stop()


def test_every_v1_route_needs_the_bearer_token(served: Served):
    for method, path in [
        ("post", "/v1/wake"), ("get", "/v1/apps"), ("get", "/v1/apps/web"), ("post", "/v1/diff"),
    ]:  # fmt: skip
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = requests.request(
                method, served.url + path, headers=headers, json={}, timeout=10
            )
            assert response.status_code == 401, (method, path, headers)
            assert response.json() == {"error": "missing or wrong bearer token"}
    assert requests.get(served.url + "/healthz", timeout=10).status_code == 200


def test_wake_answers_at_once_and_the_loop_deploys_what_the_ledger_names(served: Served):
    w = served.w
    second = w.commit(manifests(greeting="woken"), "second")
    w.record(second, pr=8)

    started = time.monotonic()
    response = served.post("/v1/wake", {"app": "web"})
    assert time.monotonic() - started < 1.0
    assert response.status_code == 202
    assert response.json() == {"queued": ["web"]}

    # The revision shows as soon as it is applied; the result once health is known.
    status = served.wait_for(lambda st: st["revision"] == second and st["phase"] == "Synced")
    assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "woken"}
    assert status["history"][0]["pr"] == 8


def test_a_wake_is_not_an_approval(served: Served):
    w = served.w
    unapproved = w.commit(manifests(greeting="not in the ledger"), "unapproved")
    before = served.get("/v1/apps/web").json()
    w.emu.reset_calls()

    assert served.post("/v1/wake", {}).status_code == 202
    deadline = time.monotonic() + 3
    while served.agent.store.get_state("ledger_commit") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the woken cycle finish

    after = served.get("/v1/apps/web").json()
    assert after["revision"] == before["revision"] != unapproved
    assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "hello"}
    assert w.emu.write_calls() == 0


def test_wake_of_an_app_this_puller_does_not_own_is_404(served: Served):
    response = served.post("/v1/wake", {"app": "billing"})
    assert response.status_code == 404
    assert served.post("/v1/wake", {"app": 5}).status_code == 400


def test_app_status_has_the_documented_shape(served: Served):
    status = served.get("/v1/apps/web").json()

    assert set(status) == APP_STATUS_KEYS
    assert status["name"] == "web"
    assert status["phase"] == "Synced" and status["health"] == "Healthy"
    assert len(status["ledger_commit"]) == 40
    assert set(status["last_result"]) == LAST_RESULT_KEYS
    assert status["history"] == [status["last_result"]]
    assert status["last_result"]["finished_at"].endswith("Z")
    assert served.get("/v1/apps").json() == {"apps": [status]}
    missing = served.get("/v1/apps/billing")
    assert missing.status_code == 404 and "error" in missing.json()


def test_diff_returns_masked_server_side_dry_run_changes(served: Served):
    w = served.w
    objects = [
        yaml.safe_load(text)
        for name, text in manifests(greeting="proposed").items()
        if not name.endswith("deployment.yaml")
    ]
    for obj in objects:
        if obj["kind"] == "Secret":
            obj["stringData"] = {"password": "new-secret-value"}
    w.emu.reset_calls()

    response = served.post("/v1/diff", {"app": "web", "objects": objects})

    assert response.status_code == 200
    body = response.json()
    assert body["app"] == "web"
    changes = {(c["kind"], c["name"]): c for c in body["changes"]}
    assert changes[("ConfigMap", "web-config")]["action"] == "update"
    assert "+  greeting: proposed" in changes[("ConfigMap", "web-config")]["diff"]
    assert changes[("Deployment", "web")]["action"] == "delete"  # inventory holds it
    assert changes[("Secret", "web-secret")]["action"] == "update"
    assert "new-secret-value" not in response.text and SECRET_VALUE not in response.text
    assert w.emu.write_calls() == 0  # dry runs only
    assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "hello"}


def test_diff_rejects_bad_input(served: Served):
    assert served.post("/v1/diff", {"app": "web", "objects": [{"kind": "x"}]}).status_code == 400
    assert served.post("/v1/diff", {"app": "web"}).status_code == 400


def test_readyz_and_metrics(served: Served):
    ready = requests.get(served.url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    metrics = requests.get(served.url + "/metrics", timeout=10).text
    assert 'sluice_puller_sync_total{app="web",result="succeeded"} 1.0' in metrics
    assert "sluice_puller_sync_duration_seconds_count 1.0" in metrics
    assert 'sluice_puller_drift_objects{app="web"} 0.0' in metrics


def test_readyz_fails_when_the_api_server_does_not_answer(served: Served):
    served.w.emu.inject(Fault.error(500), path="^/version")
    ready = requests.get(served.url + "/readyz", timeout=30)
    assert ready.status_code == 503
    assert "kubernetes API not reachable" in ready.text

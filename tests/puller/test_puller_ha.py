"""Two puller replicas on one cluster: leader election on a Lease, state kept in the cluster.

Real git, gpg, HTTP and the official client against the Kubernetes API emulator. Each
replica has its own data dir (its own mirror) and its own kube token, so the emulator
tells their requests apart. Lease timings are shortened (1.5 s / 1 s / 0.2 s) so a
takeover is quick; the production defaults are tested in test_leader.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from bot.puller import PullerAgent, build_agent, create_puller_app
from bot.puller import agent as agent_module
from bot.puller.leader import LeaseTimings
from tests.emulators.kube import WRITE_VERBS
from tests.pullerkit import TOKEN, World, manifests

TIMINGS = LeaseTimings(lease_s=1.5, renew_deadline_s=1.0, retry_s=0.2)
ELECTION = {"leader_election": {"lease_name": "sluice-puller", "namespace": "sluice-system"}}


class Killed(BaseException):
    """What a SIGKILL is to the replica's loop: it ends mid-call, nothing cleans up."""


@dataclass
class Replica:
    name: str
    agent: PullerAgent
    url: str
    lost: list[str]

    @property
    def user(self) -> str:
        return f"puller-{self.name}"

    def leads(self) -> bool:
        return self.agent._followers.leading

    def kill(self) -> None:
        """Stop renewing the Lease without releasing it, as a dead pod does."""
        elector = self.agent._followers._elector
        assert elector is not None
        elector.stop(release=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def replica(w: World, tmp: Path, name: str) -> Iterator[Replica]:
    port = _free_port()
    w.emu.add_token(f"token-{name}", user=f"puller-{name}")
    (tmp / f"token-{name}").write_text(f"token-{name}")
    w.environ = {
        "SLUICE_PULLER_ID": f"pod-{name}",
        "SLUICE_PULLER_ADVERTISE_URL": f"http://127.0.0.1:{port}",
    }
    config = w.config(
        data_dir=str(tmp / f"data-{name}"),
        interval_s=3600,
        kube={"host": w.emu.host, "token_file": str(tmp / f"token-{name}")},
        **ELECTION,
    )
    lost: list[str] = []
    agent = build_agent(
        config, health_poll_s=0.05, timings=TIMINGS, on_lost=lambda: lost.append(name)
    )
    server = make_server("127.0.0.1", port, create_puller_app(agent, TOKEN), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    agent.start()
    try:
        yield Replica(name, agent, f"http://127.0.0.1:{port}", lost)
    finally:
        agent.stop(timeout_s=10)
        server.shutdown()
        server.server_close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def writes_by(w: World, user: str) -> list[str]:
    return [
        f"{r.verb} {r.path}"
        for r in w.emu.requests
        if r.user == user and r.verb in WRITE_VERBS and "/leases" not in r.path
    ]


def synced(agent: PullerAgent, revision: str) -> Callable[[], Any]:
    def check() -> Any:
        status = agent.status("web")
        return status if status and status["revision"] == revision and (
            status["phase"] == "Synced") else None  # fmt: skip

    return check


def test_a_follower_answers_from_the_cluster_and_passes_wakes_on(w: World, tmp_path: Path):
    w.emu.add_namespace("sluice-system")
    w.record(w.anchor)
    with replica(w, tmp_path, "a") as a:
        wait_for("a to lead", a.leads)
        wait_for("a to deploy", synced(a.agent, w.anchor))
        with replica(w, tmp_path, "b") as b:
            time.sleep(TIMINGS.lease_s)  # b has had every chance to take the Lease
            assert a.leads() and not b.leads()

            listed = requests.get(f"{b.url}/v1/apps", headers=_auth(), timeout=5).json()
            [web] = listed["apps"]
            assert web["revision"] == w.anchor and web["phase"] == "Synced"
            assert web["history"][0]["result"] == "succeeded"
            assert requests.get(f"{b.url}/readyz", timeout=5).status_code == 200

            woken = requests.post(
                f"{b.url}/v1/wake", json={"app": "web"}, headers=_auth(), timeout=5
            )
            assert woken.status_code == 202 and woken.json() == {"queued": ["web"]}
            served = wait_for(
                "the leader to serve the wake",
                lambda: (h := a.agent.status("web")["history"])[0]["action"] == "sync" and h,
            )
            assert "already in sync" in served[0]["message"]
            assert writes_by(w, b.user) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_follower_takes_over_a_killed_leader_mid_apply_and_converges(w: World, tmp_path: Path):
    w.emu.add_namespace("sluice-system")
    w.record(w.anchor)
    with replica(w, tmp_path, "a") as a:
        wait_for("a to deploy", synced(a.agent, w.anchor))
        with replica(w, tmp_path, "b") as b:
            assert not b.leads()
            real_apply = a.agent.applier.cluster.apply
            calls = []

            def dying_apply(*args: Any, **kwargs: Any) -> Any:
                calls.append(args)
                if len(calls) == 3:  # two objects of the new revision are written
                    a.kill()
                    killed_at.append(time.monotonic())
                    raise Killed()
                return real_apply(*args, **kwargs)

            killed_at: list[float] = []
            a.agent.applier.cluster.apply = dying_apply  # type: ignore[method-assign]
            files = manifests(greeting="v2", image="nginx:1.28")
            files["apps/web/extra.yaml"] = (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-extra}\ndata: {k: v}\n"
            )
            v2 = w.commit(files, "v2")
            w.record(v2)
            a.agent.wake("web")

            wait_for("a to die mid-apply", lambda: killed_at)
            wait_for("b to lead", b.leads, timeout=TIMINGS.lease_s + 3)
            took_over = time.monotonic() - killed_at[0]
            assert took_over <= TIMINGS.lease_s + 2 * TIMINGS.retry_s + 0.5, took_over

            status = wait_for("b to converge", synced(b.agent, v2))
            assert status["history"][0]["result"] == "succeeded"
            assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "v2"}
            assert w.emu.get_object("v1", "ConfigMap", "web-extra", "web") is not None
            inventory = w.emu.get_object("v1", "ConfigMap", "sluice-inventory-web", "sluice-system")
            assert "web-extra" in str(inventory["data"])
            lease = w.emu.get_object("coordination.k8s.io/v1", "Lease", "sluice-puller",
                                     "sluice-system")  # fmt: skip
            assert lease["spec"]["holderIdentity"] == "pod-b"
            assert lease["spec"]["leaseTransitions"] == 1
            # Never both at once: every write of b comes after a's last one.
            order = [r.user for r in w.emu.requests
                     if r.verb in WRITE_VERBS and "/leases" not in r.path]  # fmt: skip
            assert a.user in order and b.user in order
            assert max(i for i, u in enumerate(order) if u == a.user) < order.index(b.user)
            assert a.lost == []  # a was killed, it did not see the loss coming


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_a_replica_restarted_as_a_follower_sends_what_its_outbox_still_holds(
    w: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A leader that loses the Lease exits; its container restarts with the same data dir
    (an emptyDir outlives a container restart) while the other replica leads."""
    monkeypatch.setattr(agent_module, "FOLLOWER_FLUSH_S", 0.2)
    w.emu.add_namespace("sluice-system")
    w.record(w.anchor)
    w.receiver.fail_next = 10**6  # the bot is down while a deploys
    with replica(w, tmp_path, "a") as a:
        wait_for("a to deploy", synced(a.agent, w.anchor))
        pending = a.agent.reporter.store.pending_events()
        assert [event["type"] for _, event in pending] == ["deploy"]
    writes_while_leading = writes_by(w, "puller-a")
    with replica(w, tmp_path, "b") as b:
        wait_for("b to lead", b.leads, timeout=TIMINGS.lease_s + 3)
        with replica(w, tmp_path, "a") as restarted:
            time.sleep(TIMINGS.lease_s)
            assert not restarted.leads()
            w.receiver.fail_next = 0  # the bot is back

            deployed = wait_for("a's deploy event", lambda: w.receiver.of_type("deploy"))
            assert deployed[0]["result"]["revision"] == w.anchor
            assert deployed[0]["result"]["result"] == "succeeded"
            wait_for(
                "a's outbox to empty", lambda: not restarted.agent.reporter.store.pending_events()
            )
            assert writes_by(w, restarted.user) == writes_while_leading  # a follower writes nothing

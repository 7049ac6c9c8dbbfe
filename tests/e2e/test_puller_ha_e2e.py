"""Two real ``sluice puller`` processes, one Lease: the leader is SIGKILLed mid-apply.

Real: both pullers as processes (their own data dirs, ports and kube tokens, so the
emulator's request log tells them apart), git with a bare GitOps repository, gpg and a
ledger signed by the bot's key, HTTP on 127.0.0.1. Emulated: the Kubernetes API. Lease
timings are shortened to 3 s / 2 s / 0.5 s through ``leader_election`` in puller.yaml
(the production defaults are tested in tests/puller/test_leader.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.deploy.ledger import LedgerEntry
from tests.botkit import wait_for
from tests.deploykit import (
    PULLER_TOKEN,
    DeployKeys,
    GitOps,
    PullerProcess,
    build_gitops,
    bulk_files,
    make_deploy_keys,
    puller_config,
)
from tests.emulators.kube import WRITE_VERBS, KubeEmulator
from tests.pullerkit import rollouts

LEASE_S, RENEW_S, RETRY_S = 3, 2.0, 0.5
STATE_NS = "sluice-system"
OBJECTS = 60  # ConfigMaps in the new revision of app bulk


@dataclass
class HA:
    keys: DeployKeys
    gitops: GitOps
    kube: KubeEmulator
    pullers: dict[str, PullerProcess]
    tmp: Path

    def puller(self, name: str) -> PullerProcess:
        """A ``sluice puller`` replica ``pod-<name>`` (not started)."""
        home = self.tmp / name
        home.mkdir(exist_ok=True)
        self.kube.add_token(f"kube-token-{name}", user=f"puller-{name}")
        election = {"lease_name": "sluice-puller", "namespace": STATE_NS,
                    "lease_duration_s": LEASE_S, "renew_deadline_s": RENEW_S,
                    "retry_period_s": RETRY_S}  # fmt: skip
        config = puller_config(
            home, self.keys, self.gitops, self.kube, apps=["bulk"], interval_s=3600,
            leader_election=election,
        )  # fmt: skip
        (home / "kube-token").write_text(f"kube-token-{name}")  # its own identity
        env = {"PATH": os.environ["PATH"], "HOME": str(home / "home"),
               "SLUICE_PULLER_TOKEN": PULLER_TOKEN}  # fmt: skip
        process = PullerProcess(config, env, self.tmp / f"puller-{name}.log")
        process.env |= {
            "SLUICE_PULLER_ID": f"pod-{name}",
            "SLUICE_PULLER_ADVERTISE_URL": process.url,
        }
        self.pullers[name] = process
        return process

    def holder(self) -> str | None:
        lease = self.kube.get_object("coordination.k8s.io/v1", "Lease", "sluice-puller", STATE_NS)
        return (lease or {}).get("spec", {}).get("holderIdentity") or None

    def lease(self) -> dict[str, Any]:
        lease = self.kube.get_object("coordination.k8s.io/v1", "Lease", "sluice-puller", STATE_NS)
        assert lease is not None
        return lease

    def ship(self, files: dict[str, str | None], message: str) -> str:
        """A maintainer's commit on main, approved for bulk in a ledger commit the bot signs."""
        revision = self.gitops.push_main(files, message)
        entry = LedgerEntry(app="bulk", revision=revision, pr=1, approved_by=["rita"],
                            gates={"signatures": "pass", "policy": "pass", "render": "pass"})  # fmt: skip
        self.gitops.write_ledger([entry], self.keys.bot_signer(), f"deploy bulk {message}")
        return revision

    def writes(self, user: str) -> list[Any]:
        """``user``'s writes to the cluster, the Lease's renewals left out."""
        return [r for r in list(self.kube.requests)
                if r.user == user and r.verb in WRITE_VERBS and not r.dry_run
                and "/leases" not in r.path]  # fmt: skip

    def lease_writes(self, user: str) -> list[Any]:
        """``user``'s successful writes of the Lease: it took or renewed it."""
        return [r for r in list(self.kube.requests)
                if r.user == user and "/leases" in r.path and r.verb in WRITE_VERBS
                and r.status in (200, 201)]  # fmt: skip

    def bulk_names(self) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.kube.list_objects("v1", "ConfigMap")
                      if o["metadata"].get("namespace") == "bulk")  # fmt: skip

    def inventory(self) -> list[str]:
        cm = self.kube.get_object("v1", "ConfigMap", "sluice-inventory-bulk", STATE_NS)
        assert cm is not None
        return sorted(name for name in _names_in(cm["data"]))


def _names_in(data: dict[str, str]) -> Iterator[str]:
    for text in data.values():
        for entry in yaml.safe_load(text) or []:
            if isinstance(entry, dict) and entry.get("kind") == "ConfigMap":
                yield entry["name"]


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[HA]:
    keys = make_deploy_keys(tmp_path / "keys")
    gitops = build_gitops(tmp_path, keys)
    kube = KubeEmulator().start()
    for namespace in ("bulk", STATE_NS):
        kube.add_namespace(namespace)
    stack = HA(keys, gitops, kube, {}, tmp_path)
    try:
        with rollouts(kube):
            yield stack
    finally:
        for process in stack.pullers.values():
            process.stop()
        kube.stop()
        keys.close()


def synced(revision: str):
    return lambda s: s["revision"] == revision and s["phase"] == "Synced"


def test_the_follower_takes_over_a_leader_killed_mid_apply_and_converges(ha: HA):
    v1 = ha.ship(bulk_files("old", 12), "v1")
    a = ha.puller("a").start()
    wait_for(lambda: ha.holder() == "pod-a", 10, "pod-a to lead")
    a.wait_app("bulk", synced(v1), "v1 synced by a")
    b = ha.puller("b").start()
    time.sleep(LEASE_S)  # b has had every chance to take the Lease: it must not
    assert ha.holder() == "pod-a"
    assert ha.writes("puller-b") == []
    assert b.apps()["bulk"]["revision"] == v1  # a follower answers /v1/apps from the cluster

    # A many-object revision; the API answers slowly enough that the apply takes seconds.
    v2 = ha.ship(bulk_files("new", OBJECTS), "v2")
    ha.kube.latency_s = 0.03
    b.wake("bulk")  # through the follower: it passes the wake on to a
    wait_for(
        lambda: sum("/configmaps/new-" in r.path for r in ha.writes("puller-a")) >= 10,
        20, "a to be mid-apply",
    )  # fmt: skip
    a.kill()
    killed_at = time.monotonic()
    applied_by_a = sum("/configmaps/new-" in r.path for r in ha.writes("puller-a"))
    assert applied_by_a < OBJECTS, "a finished before it was killed: nothing was mid-apply"

    wait_for(lambda: ha.holder() == "pod-b", LEASE_S + 5, "b to take the Lease")
    # b took the Lease one lease duration after a last renewed it: not sooner (a may still
    # have been writing), and not much later (each replica's clock, the emulator's log).
    renewed = max(r.at for r in ha.lease_writes("puller-a"))
    acquired = min(r.at for r in ha.lease_writes("puller-b"))
    assert LEASE_S <= acquired - renewed <= LEASE_S + 2 * RETRY_S + 0.5, acquired - renewed
    assert ha.lease()["spec"]["leaseTransitions"] >= 1

    status = b.wait_app("bulk", synced(v2), "v2 synced by b", timeout=60)
    assert status["history"][0]["result"] == "succeeded"
    expected = sorted(f"new-{i:03d}" for i in range(OBJECTS))
    # Converged: every object of v2, the inventory names exactly them, nothing of v1 is left.
    assert ha.bulk_names() == expected
    assert ha.inventory() == expected
    ha.kube.latency_s = 0.0

    # Never two writers: b's first write came after a died and after a's last write (one
    # a had in flight when it died included) was answered.
    a_writes, b_writes = ha.writes("puller-a"), ha.writes("puller-b")
    assert a_writes and b_writes
    assert max(r.at for r in a_writes) < min(r.at for r in b_writes)
    assert killed_at < min(r.at for r in b_writes)

    # a comes back (its container restarts) and follows; both answer, a wake to either is
    # acted on by the leader within seconds.
    a.start()
    for replica in (a, b):
        assert replica.apps()["bulk"]["revision"] == v2
    for via, message in ((a, "v3"), (b, "v4")):
        files = bulk_files("new", OBJECTS)
        files["apps/bulk/extra.yaml"] = (
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: extra}}\ndata: {{v: {message}}}\n"
        )
        revision = ha.ship(files, message)
        woken = time.monotonic()
        via.wake("bulk")
        b.wait_app("bulk", synced(revision), f"{message} synced after a wake", timeout=10)
        assert time.monotonic() - woken < 10
        assert a.app("bulk")["revision"] == revision
    assert ha.holder() == "pod-b"
    assert ha.writes("puller-a") == a_writes  # a wrote nothing since it came back
    assert "extra" in ha.bulk_names() and "extra" in ha.inventory()

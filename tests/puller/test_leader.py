"""Leader election on a coordination.k8s.io/v1 Lease, against the Kubernetes API emulator.

A manual clock stands in for time, so the 15 s / 10 s / 2 s timings are tested exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest

from bot.puller.cluster import Cluster, RetryPolicy
from bot.puller.leader import LEADER_URL_ANNOTATION, LeaderElector, LeaseTimings
from tests.emulators.kube import KubeEmulator, running

NAMESPACE = "sluice-system"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with running() as emulator:
        emulator.add_namespace(NAMESPACE)
        yield emulator


@pytest.fixture
def clock() -> Clock:
    return Clock()


def elector(kube: KubeEmulator, tmp_path: Path, clock: Clock, who: str) -> LeaderElector:
    cluster = Cluster(
        kube.api_client(),
        discovery_cache=tmp_path / f"{who}.json",
        retry=RetryPolicy(sleep=lambda _: None),
    )
    return LeaderElector(
        cluster,
        namespace=NAMESPACE,
        name="sluice-puller",
        identity=who,
        url=f"http://{who}.sluice-puller:8081",
        clock=clock,
    )


def lease(kube: KubeEmulator) -> dict:
    api = kubernetes.client.CoordinationV1Api(kube.api_client())
    return api.read_namespaced_lease("sluice-puller", NAMESPACE).to_dict()


def test_the_default_timings_are_controller_runtimes():
    assert LeaseTimings() == LeaseTimings(lease_s=15.0, renew_deadline_s=10.0, retry_s=2.0)
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        LeaseTimings(lease_s=10, renew_deadline_s=10, retry_s=2)


def test_one_replica_leads_and_the_other_takes_over_after_one_lease_duration(
    kube: KubeEmulator, tmp_path: Path, clock: Clock
):
    a = elector(kube, tmp_path, clock, "pod-a")
    b = elector(kube, tmp_path, clock, "pod-b")

    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    assert (a.is_leader, b.is_leader) == (True, False)
    assert b.leader_url() == "http://pod-a.sluice-puller:8081"
    stored = lease(kube)
    assert stored["spec"]["holder_identity"] == "pod-a"
    assert stored["spec"]["lease_duration_seconds"] == 15
    assert stored["metadata"]["annotations"][LEADER_URL_ANNOTATION].startswith("http://pod-a")

    clock.now += 8  # a renews in time: b, polling, sees the record move and keeps waiting
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False

    # a dies (stops renewing). It stops believing it leads at the renew deadline...
    clock.now += 9.9
    assert a.is_leader is True
    clock.now += 0.2
    assert a.is_leader is False
    # ...and b takes over once the record has not moved for a whole lease duration.
    clock.now += 4.8  # 14.9 s since b saw the last renewal
    assert b.try_acquire_or_renew() is False
    clock.now += 0.2
    assert b.try_acquire_or_renew() is True
    assert b.is_leader and b.leader_url() is None
    stored = lease(kube)
    assert stored["spec"]["holder_identity"] == "pod-b"
    assert stored["spec"]["lease_transitions"] == 1


def test_a_write_on_a_stale_lease_loses_the_race(
    kube: KubeEmulator, tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
):
    a = elector(kube, tmp_path, clock, "pod-a")
    b = elector(kube, tmp_path, clock, "pod-b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    resource = b.cluster.resource("coordination.k8s.io/v1", "Lease")
    stale = b.cluster.get(resource, "sluice-puller", NAMESPACE)
    clock.now += 16  # b thinks the lease ran out...
    assert a.try_acquire_or_renew()  # ...but a renews first
    monkeypatch.setattr(b.cluster, "get", lambda *args: stale)
    kube.reset_calls()

    assert b.try_acquire_or_renew() is False

    [write] = [r for r in kube.requests if r.verb == "update"]
    assert write.status == 409
    assert lease(kube)["spec"]["holder_identity"] == "pod-a"


def test_a_released_lease_is_taken_at_once(kube: KubeEmulator, tmp_path: Path, clock: Clock):
    a = elector(kube, tmp_path, clock, "pod-a")
    b = elector(kube, tmp_path, clock, "pod-b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()

    a.release()

    assert a.is_leader is False
    assert b.try_acquire_or_renew() is True
    assert lease(kube)["spec"]["holder_identity"] == "pod-b"

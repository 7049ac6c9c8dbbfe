"""The puller's state in ConfigMaps (leader election on): what a new leader reads back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.puller.cluster import Cluster, RetryPolicy
from bot.puller.cluster_state import ClusterHistoryStore
from bot.puller.frontier import StateFrontierStore
from bot.puller.history import LastResult
from tests.emulators.kube import KubeEmulator, running

NAMESPACE = "sluice"


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with running() as emulator:
        emulator.add_namespace(NAMESPACE)
        yield emulator


def store(kube: KubeEmulator, tmp_path: Path, limit: int = 3) -> ClusterHistoryStore:
    cluster = Cluster(
        kube.api_client(),
        discovery_cache=tmp_path / "d.json",
        retry=RetryPolicy(sleep=lambda _: None),
    )
    return ClusterHistoryStore(cluster, NAMESPACE, limit=limit)


def result(revision: str, outcome: str = "succeeded") -> LastResult:
    return LastResult(
        revision=revision, ledger_commit="l" * 40, action="deploy", pr=1, result=outcome,  # type: ignore[arg-type]
        health="Healthy", created=1, updated=0, unchanged=0, pruned=0,
        started_at="2026-12-05T21:00:00Z", finished_at="2026-12-05T21:00:01Z", duration_s=1.0,
        message="ok",
    )  # fmt: skip


def test_history_is_kept_newest_first_within_the_limit_and_read_by_another_replica(
    kube: KubeEmulator, tmp_path: Path
):
    leader = store(kube, tmp_path)
    leader.record("web", result("a" * 40), applied=True)
    for sha in "bcd":
        leader.record("web", result(sha * 40, "failed"), applied=False)
    leader.set_state("ledger_commit", "e" * 40)
    leader.publish_status("web", {"name": "web", "phase": "Held", "drift": []})

    follower = store(kube, tmp_path)
    assert [r.revision[0] for r in follower.history("web")] == ["d", "c", "b"]
    assert follower.last_applied("web") is None  # the applied one fell out of the window
    assert follower.get_state("ledger_commit") == "e" * 40
    assert follower.published_status("web") == {"name": "web", "phase": "Held", "drift": []}
    assert follower.published_apps() == ["web"]
    # One key's write keeps the others (server-side apply sends the whole map).
    assert len(follower.history("web")) == 3


def test_the_frontier_lives_there_and_unchanged_state_writes_nothing(
    kube: KubeEmulator, tmp_path: Path
):
    leader = store(kube, tmp_path)
    frontier = StateFrontierStore(leader)
    frontier.save("https://user:tok@example.com/gitops.git", ["f" * 40])
    leader.set_state("ledger_commit", "1" * 40)
    leader.publish_status("web", {"phase": "Synced"})
    kube.reset_calls()

    leader.set_state("ledger_commit", "1" * 40)
    leader.publish_status("web", {"phase": "Synced"})

    assert kube.write_calls() == 0
    assert StateFrontierStore(store(kube, tmp_path)).load("https://example.com/gitops.git") == [
        "f" * 40
    ]
    stored = kube.get_object("v1", "ConfigMap", "sluice-puller-state", NAMESPACE)
    assert "tok" not in str(stored)

"""How many Kubernetes API calls a cycle makes, counted by the emulator per verb and kind.

A no-op wake must LIST each kind at most once across every app the puller owns (drift and
health share one snapshot), write nothing and GET nothing that is not there.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.pullerkit import Keys, world

APPS = ("web", "web-a", "web-b", "web-c")
KINDS = {"Namespace", "ConfigMap", "Secret", "Deployment"}


def test_a_no_op_wake_over_four_apps_lists_each_kind_once_and_writes_nothing(
    tmp_path: Path, keys: Keys
):
    with world(tmp_path, keys, apps=APPS) as w:
        for app in APPS:
            w.record(w.anchor, app=app)
        agent = w.agent()
        assert agent.run_cycle() is True
        w.emu.reset_calls()

        assert agent.run_cycle(woken=True) is True

        lists = w.emu.calls_by_kind("list")
        assert set(lists) == KINDS and max(lists.values()) == 1, lists
        assert w.emu.write_calls() == 0, w.emu.calls()
        assert w.emu.calls_by_kind("get", status=404) == Counter()
        for app in APPS:  # the wake was served: drift and health were looked at
            last = agent.status(app)["history"][0]
            assert last["action"] == "sync" and last["health"] == "Healthy", last
            assert "already in sync" in last["message"]


def test_a_new_object_is_applied_without_a_get_first(tmp_path: Path, keys: Keys):
    with world(tmp_path, keys) as w:
        w.record(w.anchor)
        agent = w.agent()
        w.emu.reset_calls()

        assert agent.run_cycle() is True

        applied = w.emu.calls_by_kind("apply")
        assert all(applied[kind] >= 1 for kind in KINDS), applied
        # The only thing read by name before the first apply is the app's inventory.
        missing = [r.path for r in w.emu.requests if r.verb == "get" and r.status == 404]
        assert missing == ["/api/v1/namespaces/sluice-system/configmaps/sluice-inventory-web"]

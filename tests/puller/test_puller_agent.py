"""The puller's cycle against a real git repo, real gpg, real policies and the kube emulator."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kubernetes import client

from bot.cli import main
from bot.config import ConfigError
from bot.deploy.ledger import verify as ledger_verify
from bot.puller.config import load_puller_config, parse_puller_config
from tests import gpgkit
from tests.pullerkit import SECRET_VALUE, TOKEN, Keys, World, manifests, world


def _deployed(w: World) -> str:
    head = gpgkit.git(w.origin, "rev-parse", "HEAD")
    w.record(head)
    return head


# --- deploys


def test_ledger_named_revision_is_applied_recorded_and_reported(w: World):
    revision = _deployed(w)
    agent = w.agent()

    assert agent.run_cycle() is True

    cm = w.live("ConfigMap", "web-config")
    assert cm is not None and cm["data"] == {"greeting": "hello"}
    labels = cm["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "sluice"
    assert labels["sluice.dev/app"] == "web"
    assert w.live("Deployment", "web") is not None
    assert w.live("Secret", "web-secret") is not None

    status = agent.status("web")
    assert status["phase"] == "Synced"
    assert status["health"] == "Healthy"
    assert status["revision"] == status["desired_revision"] == revision
    [result] = status["history"]
    assert result["result"] == "succeeded"
    assert result["action"] == "deploy"
    assert result["revision"] == revision and result["pr"] == 7
    assert result["created"] == 4 and result["pruned"] == 0

    [event] = w.receiver.of_type("deploy")
    assert event["app"] == "web" and event["revision"] == revision and event["pr"] == 7
    assert event["result"]["result"] == "succeeded"
    assert event["ledger_commit"] == status["ledger_commit"]
    assert w.receiver.auth == [f"Bearer {TOKEN}"]


def test_a_no_op_cycle_makes_no_write_calls(w: World):
    _deployed(w)
    agent = w.agent()
    assert agent.run_cycle()
    w.emu.reset_calls()

    assert agent.run_cycle() is True

    assert w.emu.write_calls() == 0
    assert len(agent.status("web")["history"]) == 1
    assert len(w.receiver.of_type("deploy")) == 1


def test_a_restarted_puller_knows_what_it_deployed_and_writes_nothing(w: World):
    revision = _deployed(w)
    assert w.agent().run_cycle()
    w.emu.reset_calls()

    again = w.agent()  # same data dir: a new process after a restart
    assert again.run_cycle() is True

    assert w.emu.write_calls() == 0
    assert again.status("web")["revision"] == revision


def test_a_new_ledger_entry_deploys_the_new_revision_and_prunes(w: World):
    _deployed(w)
    agent = w.agent()
    assert agent.run_cycle()
    files = manifests(greeting="bonjour")
    del files["apps/web/secret.yaml"]
    gpgkit.git(w.origin, "rm", "-q", "apps/web/secret.yaml")
    second = w.commit(files, "bonjour, no secret")
    w.record(second, pr=8)

    assert agent.run_cycle() is True

    assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "bonjour"}
    assert w.live("Secret", "web-secret") is None
    status = agent.status("web")
    assert status["revision"] == second
    latest = status["history"][0]
    assert (latest["pr"], latest["updated"], latest["pruned"]) == (8, 1, 1)


# --- refusals: nothing applied


def _assert_nothing_applied(w: World, agent, phrase: str) -> dict:
    assert agent.run_cycle() is False
    assert w.live("ConfigMap", "web-config") is None
    assert w.emu.write_calls() == 0
    status = agent.status("web")
    assert status["phase"] in ("Held", "Failed")
    assert status["revision"] is None
    assert phrase in status["message"]
    [event] = w.receiver.of_type("deploy")
    assert event["result"]["result"] == "failed"
    assert phrase in event["result"]["message"]
    return status


def test_a_ledger_signed_by_an_untrusted_key_applies_nothing(w: World, keys: Keys):
    head = gpgkit.git(w.origin, "rev-parse", "HEAD")
    w.record(head, signer=keys.mallory)
    agent = w.agent()

    _assert_nothing_applied(w, agent, "not signed by a trusted bot key")
    assert agent.readiness()  # the ledger is not usable: not ready


def test_a_cycle_checks_every_ledger_entry_with_one_verifier_until_the_bot_keys_change(
    keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    built: list[object] = []
    real = ledger_verify.SignatureVerifier

    def counting(*args: object, **kwargs: object) -> object:
        built.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger_verify, "SignatureVerifier", counting)
    bot_keys = tmp_path / "mounted-bot-keys"
    shutil.copytree(keys.bot_keys, bot_keys)
    apps = ("web", "web-a", "web-b")
    with world(tmp_path, keys, apps=apps) as w:
        for app in apps:  # one ledger commit per app: each entry's writer is checked
            w.record(w.anchor, app=app)
        agent = w.agent(bot_keys=str(bot_keys))
        assert agent.run_cycle()
        assert {app: agent.status(app)["revision"] for app in apps} == dict.fromkeys(apps, w.anchor)
        assert len(built) == 1
        assert agent.run_cycle() and len(built) == 1  # the same trust set: the same verifier

        # The bot key is taken out of the mounted set: the next cycle trusts it no more.
        (bot_keys / "bot.asc").unlink()
        files = manifests(greeting="after")
        w.record(w.commit(files, "after"))
        assert agent.run_cycle() is False
        assert len(built) == 2
        assert "not signed by a trusted bot key" in agent.status("web")["message"]
        assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "hello"}
        agent.stop()


def test_an_unsigned_ledger_commit_on_a_trusted_one_applies_nothing(w: World):
    first = _deployed(w)
    agent = w.agent()
    assert agent.run_cycle()
    evil = w.commit(manifests(greeting="evil"), "evil")
    # An attacker with push access writes an entry without the bot's key.
    ledger_tip = gpgkit.git(w.origin, "rev-parse", "sluice/ledger")
    tree_entry = f"app: web\nrevision: {evil}\naction: deploy\npr: 9\nat: '2026-01-31T12:00:00Z'\n"
    blob = gpgkit.git(w.origin, "hash-object", "-w", "--stdin", input=tree_entry.encode())
    tree = gpgkit.git(w.origin, "mktree", input=f"100644 blob {blob}\tweb.yaml\n".encode())
    root = gpgkit.git(w.origin, "mktree", input=f"040000 tree {tree}\tapps\n".encode())
    forged = gpgkit.git(w.origin, "commit-tree", root, "-p", ledger_tip, "-m", "deploy 9")
    gpgkit.git(w.origin, "update-ref", "refs/heads/sluice/ledger", forged)
    w.emu.reset_calls()

    assert agent.run_cycle() is False

    assert w.emu.write_calls() == 0
    assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "hello"}
    status = agent.status("web")
    assert status["phase"] == "Held" and status["revision"] == first
    assert "unsigned" in status["message"]


def test_a_revision_on_an_unmerged_branch_applies_nothing(w: World):
    gpgkit.git(w.origin, "checkout", "-q", "-b", "feature")
    unmerged = w.commit(manifests(greeting="unmerged"), "unmerged")
    gpgkit.git(w.origin, "checkout", "-q", "main")
    w.record(unmerged)

    # The puller fetches only the tracked branch and the ledger: the commit is unknown.
    _assert_nothing_applied(w, w.agent(), "is not in the repository")


def test_a_revision_no_longer_on_the_tracked_branch_applies_nothing(w: World):
    first = _deployed(w)
    agent = w.agent()
    dropped = w.commit(manifests(greeting="dropped"), "later dropped")
    assert agent.run_cycle()  # the mirror now holds `dropped`
    gpgkit.git(w.origin, "reset", "-q", "--hard", first)  # main force-pushed back
    w.record(dropped)
    w.emu.reset_calls()

    assert agent.run_cycle() is False

    assert w.emu.write_calls() == 0
    assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "hello"}
    status = agent.status("web")
    assert status["phase"] == "Held" and status["revision"] == first
    assert "not reachable from refs/heads/main" in status["message"]
    assert (
        "not reachable from refs/heads/main"
        in w.receiver.of_type("deploy")[-1]["result"]["message"]
    )


def test_a_policy_deny_at_the_revision_applies_nothing(w: World):
    latest = w.commit(manifests(image="nginx:latest"), "use latest")
    w.record(latest)

    status = _assert_nothing_applied(w, w.agent(), "deny_latest_tag")
    assert status["desired_revision"] == latest


def test_a_policy_deny_with_an_override_in_the_signed_ledger_is_deployed(w: World):
    latest = w.commit(manifests(image="nginx:latest"), "use latest")
    w.record(
        latest,
        gates={"policy": "overridden", "policy_override": {"by": "carol", "reason": "hotfix"}},
    )
    agent = w.agent()

    assert agent.run_cycle() is True

    image = w.live("Deployment", "web")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "nginx:latest"
    assert "overridden by carol" in agent.status("web")["history"][0]["message"]


def test_an_unsigned_commit_in_the_range_under_mode_all_applies_nothing(w: World):
    _deployed(w)
    agent = w.agent()
    assert agent.run_cycle()
    unsigned = w.commit(manifests(greeting="sneaky"), "unsigned", signed=False)
    signed_head = w.commit(manifests(greeting="innocent"), "signed on top")
    w.record(signed_head)  # previous = the deployed revision: the range holds `unsigned`
    w.emu.reset_calls()

    assert agent.run_cycle() is False

    assert w.emu.write_calls() == 0
    assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "hello"}
    status = agent.status("web")
    assert status["phase"] == "Held"
    assert f"{unsigned[:12]} is unsigned" in status["message"]
    assert status["desired_revision"] == signed_head


def test_a_rewound_ledger_is_refused(w: World):
    first = _deployed(w)
    agent = w.agent()
    assert agent.run_cycle()
    old_tip = gpgkit.git(w.origin, "rev-parse", "sluice/ledger")
    second = w.commit(manifests(greeting="two"), "two")
    w.record(second)
    assert agent.run_cycle()
    gpgkit.git(w.origin, "update-ref", "refs/heads/sluice/ledger", old_tip)  # signed, but old
    w.emu.reset_calls()

    assert agent.run_cycle() is False

    assert w.emu.write_calls() == 0
    assert "rewound" in agent.status("web")["message"]
    assert agent.status("web")["revision"] == second != first


# --- drift


def _edit_live(w: World) -> None:
    """A user edits the cluster behind the puller's back (kubectl edit)."""
    core = client.CoreV1Api(w.emu.api_client())
    core.patch_namespaced_config_map(
        "web-config", "web", {"data": {"greeting": "edited by hand"}}, field_manager="kubectl-edit"
    )
    core.patch_namespaced_secret(
        "web-secret", "web", {"stringData": {"password": "changed-by-hand"}},
        field_manager="kubectl-edit",
    )  # fmt: skip


def test_drift_is_reported_masked_and_nothing_is_written(w: World):
    _deployed(w)
    agent = w.agent()
    assert agent.run_cycle()
    _edit_live(w)
    w.emu.reset_calls()

    assert agent.run_cycle() is True

    assert w.emu.write_calls() == 0
    assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "edited by hand"}
    drift = agent.status("web")["drift"]
    assert {(d["kind"], d["name"], d["action"]) for d in drift} == {
        ("ConfigMap", "web-config", "update"),
        ("Secret", "web-secret", "update"),
    }
    cm_diff = next(d["diff"] for d in drift if d["kind"] == "ConfigMap")
    assert "edited by hand" in cm_diff and "hello" in cm_diff
    [event] = w.receiver.of_type("drift")
    assert event["app"] == "web" and event["pr"] == 7 and len(event["drift"]) == 2
    text = repr(event) + repr(drift)
    assert SECRET_VALUE not in text and "changed-by-hand" not in text
    metrics = agent.metrics.render()[0].decode()
    assert 'sluice_puller_drift_objects{app="web"} 2.0' in metrics

    assert agent.run_cycle()  # the same drift again: no second report
    assert len(w.receiver.of_type("drift")) == 1


def test_self_heal_corrects_drift(tmp_path: Path, keys: Keys):
    with world(tmp_path, keys, self_heal=True) as w:
        _deployed(w)
        agent = w.agent()
        assert agent.run_cycle()
        _edit_live(w)

        assert agent.run_cycle() is True

        assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "hello"}
        status = agent.status("web")
        assert status["drift"] == []
        assert status["history"][0]["action"] == "sync"
        assert status["history"][0]["updated"] == 2
        drift_events = w.receiver.of_type("drift")
        assert [len(e["drift"]) for e in drift_events] == [2, 0]


def test_a_woken_app_is_synced_back_to_the_ledger_revision(w: World):
    _deployed(w)
    agent = w.agent()
    assert agent.run_cycle()
    _edit_live(w)

    assert agent.run_cycle(["web"], woken=True) is True

    assert w.live("ConfigMap", "web-config")["data"] == {"greeting": "hello"}
    assert agent.status("web")["history"][0]["action"] == "sync"


# --- reporting


def test_events_the_bot_missed_are_sent_on_a_later_cycle(w: World):
    _deployed(w)
    agent = w.agent()
    w.receiver.fail_next = 1

    assert agent.run_cycle() is True  # the deploy does not wait for the bot
    assert w.receiver.of_type("deploy") == []
    assert agent.run_cycle()
    [event] = w.receiver.of_type("deploy")
    assert event["result"]["result"] == "succeeded"


# --- config and CLI


def test_replicas_given_the_fingerprint_key_fingerprint_secrets_alike(w: World, tmp_path: Path):
    own = [w.agent(data_dir=str(tmp_path / f"own-{n}")).secret_key for n in "ab"]
    assert own[0] != own[1]  # without it each replica makes its own key

    key_file = tmp_path / "fingerprint-key"
    key_file.write_text("5e" * 32 + "\n")
    w.environ = {"SLUICE_FINGERPRINT_KEY_FILE": str(key_file)}
    shared = [w.agent(data_dir=str(tmp_path / f"shared-{n}")).secret_key for n in "ab"]
    assert shared == [bytes.fromhex("5e" * 32)] * 2
    assert not (tmp_path / "shared-a" / "fingerprint.key").exists()

    key_file.write_text("not-a-key-but-a-secret")
    with pytest.raises(ConfigError, match="fingerprint-key must hold a 32-byte key") as error:
        w.config()
    assert "not-a-key-but-a-secret" not in str(error.value)


def test_config_errors_name_the_file_and_the_field(tmp_path: Path):
    base = (
        "repo_url: x\napps: [web]\nbot_keys: k\ntrusted_keys: t\ndata_dir: d\n"
        f"trust_anchor: {'ab' * 20}\n"
    )
    with pytest.raises(ConfigError, match=r"^p\.yaml: interval_s: must be a number"):
        parse_puller_config(base + "interval_s: soon\n", {}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"^p\.yaml: apps: must be a non-empty list"):
        parse_puller_config(base.replace("[web]", "[]"), {}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"^p\.yaml: max_prune_ratio: must be between 0 and 1"):
        parse_puller_config(base + "max_prune_ratio: 2\n", {}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"^p\.yaml: kube: host: must be an http"):
        parse_puller_config(base + "kube: {host: ftp://x}\n", {}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"^p\.yaml: unknown field 'colour'"):
        parse_puller_config(base + "colour: red\n", {}, source="p.yaml")
    with pytest.raises(ConfigError, match="SLUICE_GIT_USERNAME and SLUICE_GIT_TOKEN"):
        parse_puller_config(base, {"SLUICE_GIT_TOKEN": "t"}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"leader_election: lease_duration_s: need retry_"):
        parse_puller_config(
            base + "leader_election: {lease_duration_s: 3, renew_deadline_s: 3}\n", {}, source="p"
        )
    election = parse_puller_config(
        base + "leader_election: {lease_duration_s: 3, renew_deadline_s: 2, retry_period_s: .5}\n",
        {"SLUICE_PULLER_ID": "pod-1"},
        source="p.yaml",
    ).leader_election
    assert election is not None and election.identity == "pod-1"
    assert (election.lease_duration_s, election.renew_deadline_s, election.retry_period_s) == (
        3, 2, 0.5)  # fmt: skip

    path = tmp_path / "puller.yaml"
    path.write_text(base)
    config = load_puller_config(path, {"SLUICE_PULLER_TOKEN": "s3cret"})
    assert (config.tracked_branch, config.ledger_branch) == ("main", "sluice/ledger")
    assert (config.interval_s, config.health_timeout_s, config.history_limit) == (300, 300, 10)
    assert config.data_dir == tmp_path / "d"
    assert "s3cret" not in repr(config)


def _write_config(w: World, path: Path) -> None:
    import yaml

    config = w.config()
    path.write_text(
        yaml.safe_dump(
            {
                "repo_url": str(w.origin),
                "apps": list(config.apps),
                "bot_keys": str(config.bot_keys),
                "trusted_keys": str(config.trusted_keys),
                "data_dir": str(config.data_dir),
                "trust_anchor": config.trust_anchor,
                "health_timeout_s": 5,
                "kube": {"host": w.emu.host, "token_file": str(config.kube.token_file)},
            }
        )
    )


def test_cli_once_exits_0_after_a_good_cycle_and_1_after_a_refusal(
    w: World, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "puller.yaml"
    _write_config(w, path)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    _deployed(w)
    assert main(["puller", "--config", str(path), "--once"]) == 0
    assert w.live("ConfigMap", "web-config") is not None

    w.record(w.commit(manifests(greeting="x"), "x"), signer=keys.mallory)
    assert main(["puller", "--config", str(path), "--once"]) == 1


def test_cli_refuses_to_serve_without_a_token(tmp_path: Path, monkeypatch, capsys):
    path = tmp_path / "puller.yaml"
    path.write_text(
        "repo_url: x\napps: [web]\nbot_keys: k\ntrusted_keys: t\ndata_dir: d\n"
        f"trust_anchor: {'ab' * 20}\n"
    )
    monkeypatch.delenv("SLUICE_PULLER_TOKEN", raising=False)
    assert main(["puller", "--config", str(path)]) == 2
    assert "SLUICE_PULLER_TOKEN" in capsys.readouterr().err

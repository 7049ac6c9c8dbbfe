"""Merge-to-deploy end to end, over real HTTP on 127.0.0.1.

Real: ``sluice serve`` (gunicorn + job process) and ``sluice puller`` as processes,
git (a bare repository is the remote; its path is the clone URL), gpg (maintainer,
GitHub web-flow, the bot's own ledger key, an untrusted key), the Rego policies,
SQLite. Emulated: the GitHub API and the Kubernetes API server (tests/emulators).

The tests share one stack and run in order, each starting from what the previous one
left deployed, the way a repository's history does. What they assert is what a user
sees: the PR comments and statuses, the ledger branch, the objects in the cluster and
the puller's ``/v1/apps``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import kubernetes.client
import pytest

from bot.deploy.comments import DEPLOYING
from bot.deploy.ledger import LedgerEntry, verify_tip
from bot.gitops import Git
from bot.signatures import TrustedKeys
from tests.botkit import SERVER_SECRETS, wait_for
from tests.deploykit import (
    APP_LABEL,
    BOT,
    MANAGED_BY,
    PULLER_TOKEN,
    REPO,
    DeployStack,
    api_files,
    b64,
    bulk_files,
    configmap,
    deploy_stack,
    dump,
    service,
    web_files,
)

pytestmark = pytest.mark.timeout(180)

DEPLOY_WEB = "sluice/deploy/web"
DEPLOY_API = "sluice/deploy/api"
DEPLOY_BULK = "sluice/deploy/bulk"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployStack]:
    with deploy_stack(tmp_path_factory.mktemp("deploy-e2e")) as running:
        yield running
    logs = running.server.log() + running.puller.log()
    assert "sluice puller serving" in logs and "queued job" in logs  # the logs are not empty
    secrets = (HAND_SET, "web-pw-v1", "web-pw-v2", "api-token-v1")
    for value in (*SERVER_SECRETS, PULLER_TOKEN, *secrets, *map(b64, secrets)):
        assert value not in logs


#: Filled in as the history is made: PR number → merge SHA.
MERGES: dict[int, str] = {}


def data_of(obj: dict | None, key: str) -> str | None:
    return None if obj is None else (obj.get("data") or {}).get(key)


def secret_value(obj: dict | None, key: str) -> str | None:
    raw = data_of(obj, key)
    return None if raw is None else base64.b64decode(raw).decode()


def assert_sluice_owned(obj: dict | None, app: str) -> None:
    assert obj is not None
    labels = obj["metadata"].get("labels") or {}
    assert labels.get(MANAGED_BY) == "sluice" and labels.get(APP_LABEL) == app, labels
    managers = {m["manager"] for m in obj["metadata"].get("managedFields") or []}
    assert "sluice" in managers, managers


# -- 1. a merge deploys -------------------------------------------------------------------


def test_a_merge_is_recorded_signed_applied_and_reported_on_the_pr(stack: DeployStack):
    assert stack.gitops.ledger_tip() is None  # nothing was ever approved
    pull, merge = stack.ship(
        "first",
        {**web_files(greeting="v1", replicas=3, password="web-pw-v1"),
         **api_files(mode="v1", token="api-token-v1")},
        number=1,
    )  # fmt: skip
    MERGES[1] = merge

    report = stack.wait_comment(1, "Sluice deploy of", absent=DEPLOYING)
    # The ledger: one commit, signed by the bot's key, approving the merge for both apps.
    ledger = verify_tip(Git(stack.gitops.bare), TrustedKeys.load(stack.keys.bot_keys))
    assert ledger.check.status == "valid" and ledger.check.fingerprint == stack.keys.bot
    for app in ("web", "api"):
        entry = stack.gitops.entry(app)
        assert entry is not None and entry.revision == merge and entry.action == "deploy"
        assert entry.pr == 1 and entry.approved_by == ["rita"] and entry.previous is None
    # The cluster: every object applied by the puller, labelled and managed as Sluice's.
    deploy = stack.live("apps/v1", "Deployment", "web", "web")
    assert_sluice_owned(deploy, "web")
    assert deploy["spec"]["replicas"] == 3
    assert data_of(stack.live("v1", "ConfigMap", "web-config", "web"), "greeting") == "v1"
    assert secret_value(stack.live("v1", "Secret", "web-db", "web"), "password") == "web-pw-v1"
    assert_sluice_owned(stack.live("v1", "Secret", "api-token", "api"), "api")
    # The PR: one report with a row per app (counts, health, duration), green statuses.
    assert merge[:12] in report
    rows = {line.split("|")[1].strip(" `"): line for line in report.splitlines()
            if line.startswith("| `")}  # fmt: skip
    assert set(rows) == {"web", "api"}
    cells = [c.strip() for c in rows["web"].split("|")[1:-1]]
    assert cells[1:4] == ["✅ succeeded", "Healthy", "3 created"], cells
    assert cells[4].endswith("s") and float(cells[4][:-1]) >= 0
    assert [c.strip() for c in rows["api"].split("|")[2:5]] == [
        "✅ succeeded",
        "Healthy",
        "2 created",
    ]
    web_status = stack.wait_status(merge, DEPLOY_WEB, "success")
    assert web_status.description == f"deployed {merge[:12]}: 3 created; Healthy"
    stack.wait_status(merge, DEPLOY_API, "success")
    # The puller's own view agrees.
    status = stack.puller.app("web")
    assert status["phase"] == "Synced" and status["revision"] == merge
    assert status["health"] == "Healthy" and status["drift"] == []
    deploy = next(h for h in status["history"] if h["action"] == "deploy")
    assert deploy["ledger_commit"] == ledger.tip and deploy["result"] == "succeeded"
    assert (deploy["created"], deploy["pruned"]) == (3, 0) and deploy["duration_s"] > 0


# -- 2. the bot's gates at the merge --------------------------------------------------------


def wait_cycles(stack: DeployStack, cycles: int = 2) -> None:
    """Until the puller ran ``cycles`` more cycles: a cycle that reaches the cluster LISTs
    each kind of each deployed app (5 kinds here); one refused before that reaches no API,
    so after ``cycles`` intervals (2 s) that much has passed anyway."""
    start, deadline = stack.kube.calls("list")["list"], time.monotonic() + 2.2 * cycles + 0.5
    wait_for(
        lambda: (
            stack.kube.calls("list")["list"] >= start + 5 * cycles or time.monotonic() > deadline
        ),
        30,
        "puller cycles",
    )


@pytest.mark.parametrize(
    ("branch", "changes", "signed", "gate", "detail"),
    [
        ("unsigned", web_files(greeting="u", replicas=3, password="web-pw-v1"), False,
         "signatures", "is unsigned"),
        ("denied", web_files(greeting="v1", replicas=3, password="web-pw-v1",
                             image="ghcr.io/acme/web:latest"), True,
         "policy", "`deny_latest_tag` on `Deployment/web`"),
        ("broken", {"apps/web/configmap.yaml": "kind: ConfigMap\ndata: [unclosed\n"}, True,
         "render", "`web` did not render"),
    ],
)  # fmt: skip
def test_a_merge_that_fails_a_gate_writes_no_ledger_and_applies_nothing(
    stack: DeployStack, branch: str, changes: dict, signed: bool, gate: str, detail: str
):
    number = {"unsigned": 2, "denied": 3, "broken": 4}[branch]
    before_main, before_ledger = stack.gitops.main(), stack.gitops.ledger_tip()
    stack.kube.reset_calls()
    try:
        _, merge = stack.ship(branch, changes, number, signed=signed)
        refusal = stack.wait_comment(number, "did not deploy")
        assert f"- {gate}: " in refusal and detail in refusal, refusal
        assert "No ledger entry was written" in refusal
        status = stack.wait_status(merge, DEPLOY_WEB, "failure")
        assert status.description == f"not deployed: {gate} gate failed", refusal
        assert stack.gitops.ledger_tip() == before_ledger
        wait_cycles(stack)
        assert stack.kube.write_calls() == 0, stack.kube.calls()
        assert stack.puller.app("web")["revision"] == MERGES[1]
        assert data_of(stack.live("v1", "ConfigMap", "web-config", "web"), "greeting") == "v1"
    finally:
        stack.gitops.reset_main(before_main)  # the maintainers take the merge back


# -- 3. the puller trusts nothing it cannot verify ------------------------------------------

GATES = {"signatures": "pass", "policy": "pass", "render": "pass", "approvals": "1/1"}


def assert_refused(stack: DeployStack, needle: str) -> None:
    """The puller holds web, applies nothing, and the bot tells PR #1 why."""
    stack.kube.reset_calls()
    stack.puller.wake("web")

    def refused(s: dict) -> bool:
        last = s["history"][0]
        return s["phase"] == "Held" and needle in s["message"] and needle in last["message"]

    held = stack.puller.wait_app("web", refused, f"held: {needle}")
    assert held["revision"] == MERGES[1]  # what runs did not change
    assert held["history"][0]["result"] == "failed"
    alert = stack.wait_comment(1, "did not deploy `web`", needle)
    assert "❌ failed" in alert
    stack.wait_status(MERGES[1], DEPLOY_WEB, "failure", contains=needle[:40])
    wait_cycles(stack)
    assert stack.kube.write_calls() == 0, stack.kube.calls()
    assert data_of(stack.live("v1", "ConfigMap", "web-config", "web"), "greeting") == "v1"


def test_the_puller_refuses_and_alerts_on_what_no_trusted_bot_approved(stack: DeployStack):
    main_before, ledger_before = stack.gitops.main(), stack.gitops.ledger_tip()
    bot, mallory = stack.keys.bot_signer(), stack.keys.mallory_signer()

    def entry(revision: str) -> LedgerEntry:
        return LedgerEntry(app="web", revision=revision, pr=1, approved_by=["x"], gates=GATES)

    # A maintainer pushes to main without a pull request; Mallory "approves" it.
    direct = stack.gitops.push_main(
        web_files(greeting="direct", replicas=3, password="web-pw-v1"), "web: direct push"
    )
    stack.gitops.write_ledger([entry(direct)], mallory, "deploy web")
    assert_refused(stack, "not signed by a trusted bot key")
    stack.gitops.rewind_ledger(ledger_before)  # the puller never acted on it: no rewind alarm

    # The push is taken back; a compromised bot still names the commit it held.
    stack.gitops.reset_main(main_before)
    stack.gitops.write_ledger([entry(direct)], bot, "deploy web")
    assert_refused(stack, f"revision {direct[:12]} is not reachable from")

    # A signed commit on main whose content the cluster's policies deny.
    latest = web_files(greeting="v1", replicas=3, password="web-pw-v1",
                       image="ghcr.io/acme/web:latest")  # fmt: skip
    denied = stack.gitops.push_main(latest, "web: track latest")
    stack.gitops.write_ledger([entry(denied)], bot, "deploy web")
    assert_refused(stack, f"policy denies revision {denied[:12]}")

    # The ledger names what runs again: the hold ends without a deploy.
    stack.gitops.reset_main(main_before)
    stack.gitops.write_ledger([entry(MERGES[1])], bot, "restore web")
    stack.puller.wake("web")
    synced = stack.puller.wait_app("web", lambda s: s["phase"] == "Synced", "synced again")
    assert synced["revision"] == MERGES[1] and synced["desired_revision"] == MERGES[1]


# -- 4. drift -----------------------------------------------------------------------------

HAND_SET = "hand-set-pw-NEVER-SHOWN-81f3"


def edit_behind_sluice(stack: DeployStack, namespace: str, kind: str, name: str, data: dict):
    """A person with cluster access edits a live object (their own field manager)."""
    core = kubernetes.client.CoreV1Api(stack.kube.api_client())
    patch = (
        core.patch_namespaced_config_map if kind == "ConfigMap" else core.patch_namespaced_secret
    )
    patch(name, namespace, {"data": data}, field_manager="kubectl-edit")


def test_drift_is_reported_masked_self_healed_where_allowed_and_fixed_by_sync(stack: DeployStack):
    edit_behind_sluice(stack, "web", "ConfigMap", "web-config", {"greeting": "hand-edited"})
    edit_behind_sluice(stack, "web", "Secret", "web-db", {"password": b64(HAND_SET)})
    edit_behind_sluice(stack, "api", "ConfigMap", "api-config", {"mode": "hand-edited"})
    hidden = (HAND_SET, b64(HAND_SET), "web-pw-v1", b64("web-pw-v1"))

    # web does not self-heal: the drift is reported, on the PR and in /v1/apps, and stays.
    drifted = stack.puller.wait_app("web", lambda s: len(s["drift"]) == 2, "two drifted objects")
    assert {(d["kind"], d["name"], d["action"]) for d in drifted["drift"]} == {
        ("ConfigMap", "web-config", "update"),
        ("Secret", "web-db", "update"),
    }
    cm_diff = next(d["diff"] for d in drifted["drift"] if d["kind"] == "ConfigMap")
    assert "hand-edited" in cm_diff and "v1" in cm_diff
    comment = stack.wait_comment(1, "Drift on `web`")
    assert "web-config" in comment and "web-db" in comment and "hand-edited" in comment
    status = stack.wait_status(MERGES[1], DEPLOY_WEB, "failure", contains="drift")
    assert status.description == f"drift: 2 objects differ from {MERGES[1][:12]}"
    shown = [str(drifted), comment, status.description, *stack.bot_comments(1)]
    for text in shown:
        for value in hidden:
            assert value not in text
    assert secret_value(stack.live("v1", "Secret", "web-db", "web"), "password") == HAND_SET

    # api sets self_heal: the puller puts it back on its own.
    healed = stack.puller.wait_app(
        "api", lambda s: s["drift"] == [] and s["history"][0]["action"] == "sync", "self-healed"
    )
    assert healed["revision"] == MERGES[1] and healed["history"][0]["updated"] == 1
    assert data_of(stack.live("v1", "ConfigMap", "api-config", "api"), "mode") == "v1"

    # /sync on the PR that deployed web reconciles it now.
    pull = stack.gh.pulls(REPO)[0]
    stack.say(pull, "/sync")
    reply = stack.wait_comment(1, "@dana\n\n`/sync`")
    assert f"`web`: deployed {MERGES[1][:12]}: 2 updated; Healthy" in reply
    assert data_of(stack.live("v1", "ConfigMap", "web-config", "web"), "greeting") == "v1"
    assert secret_value(stack.live("v1", "Secret", "web-db", "web"), "password") == "web-pw-v1"
    stack.wait_comment(1, "Drift on `web` is gone")
    synced = stack.puller.wait_app("web", lambda s: s["drift"] == [], "no drift")
    assert synced["phase"] == "Synced" and synced["history"][0]["action"] == "sync"
    stack.wait_status(MERGES[1], DEPLOY_WEB, "success")
    for text in stack.bot_comments(1):
        for value in hidden:
            assert value not in text


# -- 5. rollback, the revert PR and the pin -------------------------------------------------


def newest(status: dict, action: str) -> dict:
    return next(h for h in status["history"] if h["action"] == action)


def test_rollback_restores_the_previous_revision_and_pins_until_the_revert_merges(
    stack: DeployStack,
):
    v2 = web_files(greeting="v2", replicas=4, password="web-pw-v2")
    second, MERGES[5] = stack.ship("second", v2, 5)
    stack.wait_status(MERGES[5], DEPLOY_WEB, "success")
    assert data_of(stack.live("v1", "ConfigMap", "web-config", "web"), "greeting") == "v2"

    stack.say(second, "/rollback")
    reply = stack.wait_comment(5, "@dana\n\n`/rollback`")
    assert f"`web` → `{MERGES[1][:12]}`" in reply and "pinned until the revert merges" in reply
    entry = stack.gitops.entry("web")
    assert (entry.action, entry.revision, entry.pr) == ("rollback", MERGES[1], 5)
    assert entry.previous == MERGES[5] and entry.approved_by == ["dana"]
    # The cluster is back at the first merge's state.
    assert data_of(stack.live("v1", "ConfigMap", "web-config", "web"), "greeting") == "v1"
    assert stack.live("apps/v1", "Deployment", "web", "web")["spec"]["replicas"] == 3
    assert secret_value(stack.live("v1", "Secret", "web-db", "web"), "password") == "web-pw-v1"
    rolled = newest(stack.puller.app("web"), "rollback")
    assert rolled["revision"] == MERGES[1] and rolled["result"] == "succeeded"
    assert rolled["updated"] == 3
    # The revert pull request, opened by the bot, linked from the reply.
    (revert,) = [p for p in stack.gh.pulls(REPO) if p.head_ref == "sluice/revert-5"]
    assert revert.author == BOT and revert.state == "open" and revert.base_ref == "main"
    assert f"#{revert.number}" in reply
    assert stack.gitops.entry("api").revision == MERGES[1]  # only what #5 deployed moved

    # A later merge touching web is held while the pin stands.
    ledger_before = stack.gitops.ledger_tip()
    changes = {"apps/web/service.yaml": dump(service("web"))}
    _, MERGES[7] = stack.ship("service", changes, 7)
    held = stack.wait_comment(7, "did not deploy")
    assert f"pinned by rollback of #5 until #{revert.number} merges" in held
    stack.wait_status(MERGES[7], DEPLOY_WEB, "failure", contains="pinned")
    assert stack.gitops.ledger_tip() == ledger_before
    assert stack.live("v1", "Service", "web", "web") is None

    # Merging the revert unpins and deploys the tracked branch as it now is.
    stack.approve(revert)
    MERGES[revert.number] = stack.merge(revert)
    report = stack.wait_comment(revert.number, "Sluice deploy of", absent=DEPLOYING)
    assert "Unpinned `web`" in report
    stack.wait_status(MERGES[revert.number], DEPLOY_WEB, "success")
    entry = stack.gitops.entry("web")
    assert (entry.action, entry.revision) == ("deploy", MERGES[revert.number])
    assert stack.live("v1", "Service", "web", "web") is not None  # #7's change, now deployed
    assert data_of(stack.live("v1", "ConfigMap", "web-config", "web"), "greeting") == "v1"


# -- 6. pruning only what is safe to prune; a puller killed mid-apply -----------------------

BULK = [("ConfigMap", "bulk", f"b-{i:03d}") for i in range(12)] + [("ConfigMap", "bulk", "b-extra")]
EXTRA = {"apps/bulk/extra.yaml": dump(configmap("b-extra", {"index": "extra"}))}


def bulk_names(stack: DeployStack) -> list[str]:
    return [o["metadata"]["name"] for o in stack.kube.list_objects("v1", "ConfigMap", "bulk")]


def test_an_over_threshold_prune_an_empty_render_and_a_render_error_prune_nothing(
    stack: DeployStack,
):
    _, MERGES[10] = stack.ship("bulk", EXTRA, 10)
    stack.wait_status(MERGES[10], DEPLOY_BULK, "success", contains="13 created")
    assert stack.inventory("bulk") == sorted(BULK)
    assert stack.owned("bulk") == sorted(name for _, _, name in BULK)

    # 12 of the 13 objects would go: more than max_prune_ratio (50%) without allow_mass_prune.
    _, MERGES[11] = stack.ship("shrink", {"apps/bulk/configmaps.yaml": None}, 11)
    status = stack.wait_status(MERGES[11], DEPLOY_BULK, "failure", contains="prune refused")
    assert "12 of 13 inventory objects would be deleted" in status.description
    report = stack.wait_comment(11, "Sluice deploy of", absent=DEPLOYING)
    assert "❌ failed" in report and "nothing pruned" in report
    assert stack.owned("bulk") == sorted(name for _, _, name in BULK)
    assert stack.inventory("bulk") == sorted(BULK)

    # A render of no objects at all (the last file emptied): nothing applied, nothing pruned.
    _, MERGES[12] = stack.ship("empty", {"apps/bulk/extra.yaml": "# nothing here\n"}, 12)
    status = stack.wait_status(MERGES[12], DEPLOY_BULK, "failure", contains="no objects")
    assert "nothing pruned" in status.description
    assert stack.owned("bulk") == sorted(name for _, _, name in BULK)

    # A revision that does not render in the cluster (named by a buggy bot).
    broken = stack.gitops.push_main({"apps/bulk/broken.yaml": "kind: [\n"}, "bulk: broken")
    stack.gitops.write_ledger(
        [LedgerEntry(app="bulk", revision=broken, pr=12, approved_by=["x"], gates=GATES)],
        stack.keys.bot_signer(),
        "deploy bulk",
    )
    stack.puller.wake("bulk")
    failed = stack.puller.wait_app(
        "bulk", lambda s: s["phase"] == "Failed" and "render failed" in s["message"], "failed"
    )
    assert failed["revision"] == MERGES[10]
    assert stack.owned("bulk") == sorted(name for _, _, name in BULK)
    assert stack.inventory("bulk") == sorted(BULK)


def test_a_puller_killed_mid_apply_converges_after_restart_with_nothing_lost_or_orphaned(
    stack: DeployStack,
):
    wanted = [f"k-{i:03d}" for i in range(40)]
    changes = {**bulk_files("k", 40), "apps/bulk/extra.yaml": None, "apps/bulk/broken.yaml": None}
    stack.kube.latency_s = 0.04  # every API call is slow: the apply takes seconds
    try:
        _, MERGES[13] = stack.ship("forty", changes, 13)

        def mid_apply() -> bool:
            created = [n for n in bulk_names(stack) if n.startswith("k-")]
            return 5 <= len(created) <= 30

        wait_for(mid_apply, 60, "the puller to be part-way through the apply", 0.02)
        stack.puller.kill()
        time.sleep(0.3)  # a request already sent still lands, as on a real API server
    finally:
        stack.kube.latency_s = 0.0
    created = [n for n in bulk_names(stack) if n.startswith("k-")]
    assert 5 <= len(created) < 40, created
    # The inventory was widened before the first write: what the dead puller created is known.
    assert set(stack.inventory("bulk")) >= {("ConfigMap", "bulk", n) for n in wanted}

    stack.puller.start()
    stack.wait_status(MERGES[13], DEPLOY_BULK, "success", timeout=90)
    assert bulk_names(stack) == wanted  # every desired object, and nothing else
    assert stack.owned("bulk") == wanted
    assert stack.inventory("bulk") == [("ConfigMap", "bulk", n) for n in wanted]
    status = stack.puller.app("bulk")
    assert status["phase"] == "Synced" and status["revision"] == MERGES[13]
    deployed = newest(status, "deploy")
    assert deployed["revision"] == MERGES[13] and deployed["pruned"] == 13
    assert deployed["created"] == 40 - len(created)


# -- 7. preview-deploy of an open pull request ----------------------------------------------


def test_sync_on_an_open_pr_preview_deploys_only_apps_that_allow_it(stack: DeployStack):
    staging = {"apps/staging/configmap.yaml": dump(configmap("staging-config", {"build": "pr-14"}))}
    head = stack.gitops.branch("staging-try", staging)
    pull = stack.pull("staging-try", 14)
    stack.approve(pull)
    stack.say(pull, "/sync")
    reply = stack.wait_comment(14, "@dana\n\n`/sync`")
    assert f"preview-deploy of `{head[:12]}` recorded in ledger commit" in reply
    assert f"`staging`: deployed {head[:12]}: 1 created" in reply
    entry = stack.gitops.entry("staging")
    assert (entry.action, entry.revision, entry.pr) == ("preview-deploy", head, 14)
    assert data_of(stack.live("v1", "ConfigMap", "staging-config", "staging"), "build") == "pr-14"
    status = stack.puller.app("staging")
    assert status["revision"] == head and newest(status, "preview-deploy")["pr"] == 14
    stack.wait_status(head, "sluice/deploy/staging", "success")
    assert stack.gitops.main() != head and pull.state == "open"  # never merged

    # web does not set sync_before_merge: an open PR of it is not deployed.
    ledger_before = stack.gitops.ledger_tip()
    live_before = stack.live("v1", "ConfigMap", "web-config", "web")
    stack.gitops.branch("web-try", web_files(greeting="try", replicas=3, password="web-pw-v1"))
    other = stack.pull("web-try", 15)
    stack.approve(other)
    stack.say(other, "/sync")
    refusal = stack.wait_comment(15, "@dana\n\n`/sync` refused")
    assert "`web` does not allow deploying before merge" in refusal
    assert stack.gitops.ledger_tip() == ledger_before
    assert stack.live("v1", "ConfigMap", "web-config", "web") == live_before

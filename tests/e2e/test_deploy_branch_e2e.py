"""``deploy_branch`` end to end: the branch Argo CD or Flux tracks moves only to approved
merges, never on a failing gate, back on ``/rollback`` (force-with-lease, recorded in the
ledger), and never over someone else's push.

Real: ``sluice serve`` and ``sluice puller`` processes, git with a bare repository as the
remote, gpg. Emulated: the GitHub API and the Kubernetes API server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import yaml

from bot.deploy.comments import DEPLOYING
from tests import gpgkit
from tests.deploykit import (
    REPO,
    DeployStack,
    configmap,
    deploy_stack,
    dump,
    sluice_yaml,
    web_files,
)

pytestmark = pytest.mark.timeout(240)

BRANCH = "sluice/approved"
DEPLOY_WEB = "sluice/deploy/web"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployStack]:
    tmp = tmp_path_factory.mktemp("deploy-branch")
    with deploy_stack(tmp) as running:
        config = tmp / "serve.yaml"
        config.write_text(dump({"repos": [{"match": "*", "deploy_branch": BRANCH}]}))
        running.server.stop()
        running.server.config = config
        running.server.start()
        yield running


def approved(stack: DeployStack) -> str | None:
    out = gpgkit.git(
        stack.gitops.bare, "for-each-ref", "--format=%(objectname)", f"refs/heads/{BRANCH}"
    )
    return out or None


MERGES: dict[int, str] = {}


def test_a_passing_merge_creates_then_fast_forwards_the_branch(stack: DeployStack) -> None:
    assert approved(stack) is None
    _, MERGES[1] = stack.ship("one", web_files(greeting="v1", replicas=2, password="pw-one-1"), 1)
    report = stack.wait_comment(1, "Sluice deploy of", absent=DEPLOYING)
    assert f"Deploy branch `{BRANCH}` moved from nothing (created) to `{MERGES[1][:12]}`" in report
    assert approved(stack) == MERGES[1]
    # The ledger commit approving the merge is the audit record of the move.
    assert stack.gitops.entry("web").revision == MERGES[1]

    _, MERGES[2] = stack.ship("two", web_files(greeting="v2", replicas=2, password="pw-two-2"), 2)
    report = stack.wait_comment(2, "Sluice deploy of", absent=DEPLOYING)
    assert f"moved from `{MERGES[1][:12]}` to `{MERGES[2][:12]}` (fast-forward)" in report
    assert approved(stack) == MERGES[2]
    stack.wait_status(MERGES[2], DEPLOY_WEB, "success")


def test_a_merge_that_fails_a_gate_never_moves_it(stack: DeployStack) -> None:
    before_main = stack.gitops.main()
    try:
        changes = web_files(greeting="v3", replicas=2, password="pw-unsigned-3")
        _, merge = stack.ship("unsigned", changes, 3, signed=False)
        refusal = stack.wait_comment(3, "did not deploy")
        assert "- signatures: " in refusal
        stack.wait_status(merge, DEPLOY_WEB, "failure")
        assert approved(stack) == MERGES[2]
    finally:
        stack.gitops.reset_main(before_main)


def test_rollback_moves_it_back_with_a_recorded_force_with_lease_push(stack: DeployStack) -> None:
    pull = next(p for p in stack.gh.pulls(REPO) if p.number == 2)
    stack.say(pull, "/rollback")
    reply = stack.wait_comment(2, "@dana\n\n`/rollback`")
    assert f"`web` → `{MERGES[1][:12]}`" in reply, reply
    assert approved(stack) == MERGES[1]
    entry = stack.gitops.entry("web")
    assert entry.action == "rollback" and entry.revision == MERGES[1]
    assert entry.gates["deploy_branch"] == {
        "branch": BRANCH,
        "from": MERGES[2],
        "to": MERGES[1],
        "push": "force-with-lease",
    }
    # The rollback's report on the PR says where the branch went.
    stack.wait_comment(2, f"moved from `{MERGES[2][:12]}` to `{MERGES[1][:12]}` (force-with-lease)")


def shop_app(url: str) -> str:
    return dump(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": "shop", "namespace": "argocd"},
            "spec": {
                "source": {"repoURL": url, "path": "apps/shop", "targetRevision": BRANCH},
                "destination": {"namespace": "shop"},
            },
        }
    )


def shop_config(version: str) -> str:
    return dump(configmap("shop-config", {"version": version}))


def test_a_pin_holds_the_branch_and_an_argo_app_is_handed_to_its_engine(stack: DeployStack):
    """An Argo CD app found by discovery is gated, recorded and left to Argo CD, while the
    rollback's pin keeps the branch (and so the rolled-back change) where it is."""
    url = str(stack.gitops.bare)
    config = yaml.safe_load(sluice_yaml())
    config["discover"] = {"repo_urls": [url], "argocd": {"paths": ["argocd/**"]}}
    changes = {
        ".sluice.yaml": dump(config),
        "argocd/shop.yaml": shop_app(url),
        "apps/shop/configmap.yaml": shop_config("1"),
    }
    _, MERGES[6] = stack.ship("shop", changes, 6)
    report = stack.wait_comment(6, "Sluice deploy of", "argocd:shop", absent=DEPLOYING)
    assert f"Deploy branch `{BRANCH}` not moved: `web` pinned by a rollback" in report
    assert re.search(r"<sub>made \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</sub>$", report)
    assert approved(stack) == MERGES[1]
    assert stack.gitops.entry("argocd:shop").revision == MERGES[6]
    status = stack.wait_status(MERGES[6], "sluice/deploy/argocd:shop", "failure")
    assert f"{BRANCH} was not moved" in status.description

    # The revert of #2 merges: the pin goes, the branch fast-forwards past the shop merge.
    revert = next(p for p in stack.gh.pulls(REPO) if p.head_ref == "sluice/revert-2")
    stack.approve(revert)
    MERGES[revert.number] = stack.merge(revert)
    report = stack.wait_comment(revert.number, "Sluice deploy of", absent=DEPLOYING)
    assert f"to `{MERGES[revert.number][:12]}` (fast-forward)" in report
    assert approved(stack) == MERGES[revert.number]
    stack.wait_status(MERGES[revert.number], DEPLOY_WEB, "success")  # the puller still deploys


def test_a_branch_someone_else_moved_is_left_alone_and_said_so(stack: DeployStack) -> None:
    rogue = stack.gitops.branch("rogue", {"apps/shop/rogue.yaml": "x: 1\n"})
    gpgkit.git(stack.gitops.bare, "update-ref", f"refs/heads/{BRANCH}", rogue)
    _, merge = stack.ship("shop-v2", {"apps/shop/configmap.yaml": shop_config("2")}, 9)
    report = stack.wait_comment(9, "Sluice deploy of", absent=DEPLOYING)
    assert "Approved `argocd:shop` in ledger commit" in report
    assert f"Deploy branch `{BRANCH}` not moved: {BRANCH} is at {rogue[:12]}" in report
    assert "someone else moved it" in report
    assert approved(stack) == rogue
    stack.wait_status(merge, "sluice/deploy/argocd:shop", "failure")


def test_rollback_of_an_argo_app_moves_the_branch_back_before_its_merge(stack: DeployStack):
    pull = next(p for p in stack.gh.pulls(REPO) if p.number == 9)
    merge = stack.gitops.entry("argocd:shop").revision
    before = gpgkit.git(stack.gitops.bare, "rev-parse", f"{merge}^1")
    rogue = approved(stack)
    stack.say(pull, "/rollback argocd:shop")
    reply = stack.wait_comment(9, "@dana\n\n`/rollback`")
    assert f"`argocd:shop` → `{MERGES[6][:12]}`" in reply, reply
    entry = stack.gitops.entry("argocd:shop")
    assert (entry.action, entry.revision) == ("rollback", MERGES[6])
    # Back to where the branch stood before #9 (the revert's merge), over the rogue push.
    assert approved(stack) == before
    assert entry.gates["deploy_branch"] == {
        "branch": BRANCH, "from": rogue, "to": before, "push": "force-with-lease"
    }  # fmt: skip
    status = stack.wait_status(merge, "sluice/deploy/argocd:shop", "success")
    assert status.description.endswith(f"its engine deploys {BRANCH}")

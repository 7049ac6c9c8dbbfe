"""Merge-to-deploy end to end on GitLab, over real HTTP on 127.0.0.1.

Real: ``sluice serve`` and ``sluice puller`` as processes, git (a bare repository is
the remote), gpg (the maintainer signs the work, the bot signs the ledger), the Rego
policies. Emulated: the GitLab API and the Kubernetes API server.

GitLab's merge button records a merge with an UNSIGNED commit. The puller accepts
one only when its tree is exactly the clean merge of its two parents (whose commits
are signed); a merge commit that brings content of its own (an "evil merge") is held.

The tests share one stack and run in order: the second starts from what the first
deployed.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from bot.deploy.comments import DEPLOYING
from bot.deploy.ledger import verify_tip
from bot.gitops import Git
from bot.signatures import TrustedKeys
from tests import gpgkit
from tests.botkit import SERVER_SECRETS
from tests.deploykit import (
    PULLER_TOKEN,
    GitLabDeployStack,
    configmap,
    dump,
    gitlab_deploy_stack,
    web_files,
)

pytestmark = pytest.mark.timeout(120)

DEPLOY_WEB = "sluice/deploy/web"
SECRETS = ("gl-web-pw-v1", "gl-web-pw-v2")

#: Filled in as the history is made: MR iid → merge commit.
MERGES: dict[int, str] = {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabDeployStack]:
    with gitlab_deploy_stack(tmp_path_factory.mktemp("deploy-gitlab-e2e")) as running:
        yield running
    logs = running.server.log() + running.puller.log()
    assert "sluice puller serving" in logs and "queued job" in logs  # the logs are not empty
    for value in (*SERVER_SECRETS, PULLER_TOKEN, *SECRETS):
        assert value not in logs
        assert base64.b64encode(value.encode()).decode() not in logs


def greeting(stack: GitLabDeployStack) -> str | None:
    live = stack.live("v1", "ConfigMap", "web-config", "web")
    return None if live is None else live["data"]["greeting"]


def parents(stack: GitLabDeployStack, sha: str) -> list[str]:
    return gpgkit.git(stack.gitops.bare, "rev-list", "--parents", "-n1", sha).split()[1:]


def is_signed(stack: GitLabDeployStack, sha: str) -> bool:
    return "\ngpgsig " in gpgkit.git(stack.gitops.bare, "cat-file", "commit", sha)


def test_a_merged_mr_is_recorded_signed_applied_and_reported_on_the_mr(stack: GitLabDeployStack):
    assert stack.gitops.ledger_tip() is None
    head = stack.gitops.branch(
        "first", web_files(greeting="v1", replicas=3, password="gl-web-pw-v1")
    )
    base = stack.gitops.main()
    mr = stack.mr("first", 1)
    stack.approve(mr)  # rita approves dana's MR at its head
    merge = MERGES[1] = stack.merge(mr)

    # GitLab's merge: a two-parent commit nobody signed, now the tip of main.
    assert parents(stack, merge) == [base, head] and stack.gitops.main() == merge
    assert is_signed(stack, head) and not is_signed(stack, merge)

    report = stack.wait_note(mr, "Sluice deploy of", absent=DEPLOYING)
    # The ledger: a bot-signed commit approving GitLab's merge commit for web.
    ledger = verify_tip(Git(stack.gitops.bare), TrustedKeys.load(stack.keys.bot_keys))
    assert ledger.check.status == "valid" and ledger.check.fingerprint == stack.keys.bot
    entry = stack.gitops.entry("web")
    assert (entry.revision, entry.action, entry.pr) == (merge, "deploy", 1)
    assert entry.approved_by == ["rita"] and entry.previous is None
    assert entry.pr_url.endswith("/acme/gitops/-/merge_requests/1")
    # The cluster runs the merge.
    assert greeting(stack) == "v1"
    assert stack.live("apps/v1", "Deployment", "web", "web")["spec"]["replicas"] == 3
    # The MR: the deploy report note and a green status on the merge commit.
    assert merge[:12] in report
    (row,) = [line for line in report.splitlines() if line.startswith("| `web`")]
    assert [c.strip() for c in row.split("|")[2:5]] == ["✅ succeeded", "Healthy", "3 created"]
    status = stack.wait_status(merge, DEPLOY_WEB, "success")
    assert status.description == f"deployed {merge[:12]}: 3 created; Healthy"
    assert status.ref == "main"
    puller = stack.puller.app("web")
    assert puller["phase"] == "Synced" and puller["revision"] == merge
    assert puller["history"][0]["ledger_commit"] == ledger.tip


def evil_merge(stack: GitLabDeployStack, branch: str, iid: int) -> str:
    """A merge of ``branch`` into main that slips in a file neither parent has, unsigned,
    pushed by someone with push rights to main (what ``--no-ff`` plus one edit makes)."""
    work = stack.gitops.work
    gpgkit.git(work, "fetch", "-q", str(stack.gitops.bare),
               f"+refs/heads/{branch}:refs/remotes/origin/{branch}")  # fmt: skip
    gpgkit.git(work, "checkout", "-q", "-B", "main", stack.gitops.main())
    gpgkit.git(work, "merge", "-q", "--no-ff", "--no-commit", f"origin/{branch}")
    backdoor = work / "apps/web/backdoor.yaml"
    backdoor.write_text(dump(configmap("backdoor", {"url": "https://evil.example"})))
    gpgkit.git(work, "add", str(backdoor))
    gpgkit.git(work, "-c", "commit.gpgsign=false", "commit", "-q",
               "-m", f"Merge branch '{branch}' into 'main'\n\nSee merge request acme/gitops!{iid}")  # fmt: skip
    gpgkit.git(work, "push", "-q", str(stack.gitops.bare), "main:refs/heads/main")
    return gpgkit.git(work, "rev-parse", "HEAD")


def test_an_evil_merge_commit_is_held_by_the_puller_and_applies_nothing(stack: GitLabDeployStack):
    head = stack.gitops.branch(
        "second", web_files(greeting="v2", replicas=3, password="gl-web-pw-v2")
    )
    mr = stack.mr("second", 2)
    stack.approve(mr)
    evil = evil_merge(stack, "second", 2)
    assert parents(stack, evil)[1] == head and not is_signed(stack, evil)
    stack.kube.reset_calls()
    merge = stack.merge(mr, evil)

    # The bot's gates look at the reviewed head (signed) and the merge's content (no policy
    # denies a ConfigMap), so it approves; the puller, which trusts no forge, refuses.
    needle = f"{evil[:12]} is unsigned"
    report = stack.wait_note(mr, "Sluice deploy of", "❌ failed", absent=DEPLOYING)
    assert needle in report and "signatures" in report
    assert stack.gitops.entry("web").revision == merge
    status = stack.wait_status(merge, DEPLOY_WEB, "failed")
    assert needle in status.description
    held = stack.puller.wait_app("web", lambda s: s["phase"] == "Held", "held")
    assert needle in held["message"] and held["revision"] == MERGES[1]
    assert held["history"][0]["result"] == "failed" and needle in held["history"][0]["message"]

    time.sleep(4.5)  # two more puller cycles (interval 2 s): they hold it too
    assert stack.kube.write_calls() == 0, stack.kube.calls()
    assert stack.live("v1", "ConfigMap", "backdoor", "web") is None
    assert greeting(stack) == "v1"
    assert stack.puller.app("web")["phase"] == "Held"

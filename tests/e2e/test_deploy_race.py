"""Two bot replicas on one PostgreSQL receive the merge events of PRs that touch the
same app: each merge gets exactly one signed ledger commit, in merge order, and no
replica's push loses the other's (real git, gpg, ``sluice serve`` processes)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from bot.deploy.ledger import verify_tip
from bot.gitops import Git
from bot.signatures import TrustedKeys
from tests.botkit import GH_TOKEN, wait_for
from tests.deploykit import BOT, REPO, build_gitops, make_deploy_keys, web_files
from tests.emulators import github as ghemu
from tests.replicakit import Replica, replica_env

pytestmark = pytest.mark.timeout(300)
ROUNDS = 3


def test_merges_of_one_app_on_two_replicas_deploy_once_each_in_merge_order(tmp_path, pg_url):
    keys = make_deploy_keys(tmp_path / "keys")
    gitops = build_gitops(tmp_path, keys)
    with ghemu.GitHubEmulator(bot_login=BOT, bot_token=GH_TOKEN) as gh:
        gh.add_repo(REPO, clone_url=str(gitops.bare))
        gh.set_permission(REPO, "rita", "write")
        signing = {
            "SLUICE_TRUSTED_KEYS": str(keys.repo_keys),
            "SLUICE_SIGNING_METHOD": "gpg",
            "SLUICE_SIGNING_KEY": keys.bot,
            "SLUICE_GNUPGHOME": str(keys.bot_home),
            "SLUICE_REQUIRED_APPROVALS": "1",
        }
        replicas = [
            Replica(
                replica_env(tmp_path, f"r{i}", pg_url, github_url=gh.base_url, **signing),
                tmp_path / f"r{i}.log",
            )  # fmt: skip
            for i in range(2)
        ]
        for replica in replicas:
            replica.start()
        try:
            merges: list[str] = []
            number = 0
            for round_ in range(ROUNDS):
                # Two PRs branch from the same main and both change the web app.
                pulls = []
                for side in ("a", "b"):
                    number += 1
                    branch = f"r{round_}{side}"
                    files = web_files(greeting=branch, replicas=2 + number, password="pw")
                    # Different files of the one app: both merge cleanly, both deploy web.
                    touched = "configmap" if side == "a" else "deployment"
                    gitops.branch(
                        branch, {f"apps/web/{touched}.yaml": files[f"apps/web/{touched}.yaml"]}
                    )
                    pull = gh.add_pull(REPO, number=number, base_sha=gitops.main(),
                                       head_ref=branch, head_sha=_head(gitops, branch))  # fmt: skip
                    gh.add_review(REPO, number, "rita", commit_id=pull.head_sha)
                    pulls.append(pull)
                # Merged one after the other; each merge event reaches another replica.
                for pull in pulls:
                    sha = gitops.merge(pull.head_ref, pull.number)
                    gh.merge_pull(REPO, pull.number, sha)
                    merges.append(sha)
                for pull, replica in zip(pulls, replicas, strict=True):
                    event = gh.pull_request_event(REPO, pull.number, action="closed")
                    answer = replica.github("pull_request", event)
                    assert answer.status_code == 202, answer.text

            wait_for(lambda: _idle(pg_url), 180, "both replicas to finish the deploys", 0.5)
            history = gitops.ledger().history("web", limit=50)
            revisions = [entry.revision for _, entry in reversed(history)]
            assert revisions == merges, "one ledger commit per merge, in merge order"
            # No lost update: each commit's entry names the one before it as previous.
            previous = [entry.previous for _, entry in reversed(history)]
            assert previous[1:] == revisions[:-1]
            tip = verify_tip(Git(gitops.bare), TrustedKeys.load(keys.bot_keys))
            assert tip.check.status == "valid" and tip.tip == history[0][0]
            with psycopg.connect(pg_url, row_factory=dict_row) as conn:
                ran = conn.execute(
                    "SELECT id, worker_id FROM jobs WHERE kind = 'merged' ORDER BY id"
                ).fetchall()
            print("merge jobs ran on:", [r["worker_id"].split(":")[0] for r in ran])
        finally:
            for replica in replicas:
                replica.stop()
            keys.close()


def _head(gitops, branch: str) -> str:
    from tests import gpgkit

    return gpgkit.git(gitops.bare, "rev-parse", f"refs/heads/{branch}")


def _idle(url: str) -> bool:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
    states = {r["state"]: r["n"] for r in rows}
    assert not states.get("failed"), states
    return bool(states) and not states.get("queued") and not states.get("running")

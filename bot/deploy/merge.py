"""Promotion of a merged pull request: gates at the merge, one ledger commit, the puller.

When every gate holds at the merge commit, ONE signed ledger commit approves it
for each affected app; it is pushed with the bot's credentials, the puller is
woken and followed, and the PR gets the deploy report and a ``sluice/deploy/<app>``
status per app. When a gate fails nothing is written: the PR gets a comment naming
the gate and a failure status per app (``bot.deploy.gates``).

Ordering: one deploy per app at a time (an in-process lock per app, held from the
ledger write until the puller has reported, which is enough because one job
process runs every job), and the ledger only moves forward along the tracked
branch: a merge that is an ancestor of what the ledger already names is
"superseded" rather than deployed, so merges that finish out of order never
deploy an older revision last.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.config.server import RepoSettings
from bot.deploy.comments import held_comment
from bot.deploy.deploy_branch import (
    advance,
    branch_for,
    engine_apps,
    engine_comment,
    engine_handoff,
)
from bot.deploy.desk import DeployDesk
from bot.deploy.follow import PullerFollower
from bot.deploy.gates import GateResult, Gates
from bot.deploy.ledger import LedgerEntry
from bot.deploy.ledger_writer import LedgerWriter, http_url
from bot.deploy.pins import repo_key
from bot.exports import ExportCache
from bot.forge.base import Forge, ForgeError, PullRequest, RepoRef
from bot.gitops import Git, GitError
from bot.preview import repo_apps
from bot.render import affected_apps

log = logging.getLogger(__name__)


@dataclass
class MergePromotion:
    """Deploys merged pull requests (idempotent: a re-run records nothing twice)."""

    desk: DeployDesk

    def on_merged(self, forge: Forge, pr: PullRequest) -> None:
        """Promote a merged PR (idempotent: a re-run records nothing twice)."""
        desk = self.desk
        if pr.state != "merged" or not pr.merge_sha:
            log.info("%s#%s is not merged; nothing to promote", pr.repo.full_name, pr.number)
            return
        settings = desk.settings(pr.repo)
        if pr.base_ref != settings.tracked_branch:
            log.info("%s#%s merged into %s, not the tracked branch %s; no deploy",
                     pr.repo.full_name, pr.number, pr.base_ref, settings.tracked_branch)  # fmt: skip
            return
        key = repo_key(pr.repo.forge, pr.repo.full_name)
        unpinned = desk.pins.unpin_revert(key, pr.number)
        git = desk.mirror(forge, pr.repo, settings, [pr.merge_sha, pr.head_sha], pr.head_clone_url)
        base = _merge_base_side(git, pr)
        gates = Gates(desk)
        result = gates.check(forge, git, pr, settings, base=base, head=pr.merge_sha)
        if not result.apps:
            log.info("%s#%s affects no app; nothing to deploy", pr.repo.full_name, pr.number)
            return
        with desk.locks.hold(key, result.apps):
            if not result.passed:
                gates.refuse(forge, pr, result, pr.merge_sha)
                return
            self._promote(forge, git, pr, settings, result, unpinned)

    def on_push(self, forge: Forge, repo: RepoRef, branch: str, sha: str) -> str:
        """A direct push to ``branch``: never deployed, and the reply says why.

        Approvals belong to pull requests, so a push cannot pass the approval gate.
        """
        settings = self.desk.settings(repo)
        if branch != settings.tracked_branch:
            return f"{branch} is not the tracked branch; no deploy"
        return (f"a direct push to {branch} ({sha[:12]}) is not deployed: Sluice deploys only "
                "merged pull requests, whose approvals it can check")  # fmt: skip

    def _promote(
        self,
        forge: Forge,
        git: Git,
        pr: PullRequest,
        settings: RepoSettings,
        gates: GateResult,
        unpinned: list[str],
    ) -> None:
        desk = self.desk
        merge = pr.merge_sha
        assert merge is not None
        key = repo_key(pr.repo.forge, pr.repo.full_name)
        writer = LedgerWriter(desk)
        ledger = writer.open(forge, git, pr.repo, settings)
        deploy, done, notes = [], [], []
        for app in gates.apps:
            pin = desk.pins.get(key, app)
            current = ledger.read(app)
            if pin is not None:
                desk.status(forge, pr.repo, merge, app, "failure", pin.reason())
                notes.append(f"`{app}` is {pin.reason()}: this merge is not deployed.")
            elif current is not None and current.revision == merge:
                done.append(app)  # recorded by an earlier run of this job
            elif current is not None and git.is_ancestor(merge, current.revision):
                desk.status(forge, pr.repo, merge, app, "success",
                            f"superseded: {current.revision[:12]} is deployed and contains it")  # fmt: skip
                notes.append(f"`{app}`: a later merge ({current.revision[:12]}) already deploys "
                             "this change.")  # fmt: skip
            else:
                deploy.append(app)
        if not deploy and not done:
            if notes:
                forge.create_comment(pr, held_comment(merge, notes, desk.clock()))
            return
        if deploy:
            entries = [
                LedgerEntry(
                    app=app,
                    revision=merge,
                    action="deploy",
                    pr=pr.number,
                    pr_url=http_url(pr.url),
                    approved_by=gates.approved_by,
                    gates=gates.summary,
                )
                for app in deploy
            ]
            writer.record(forge, pr, ledger, entries, status_sha=merge)
        apps = deploy + done
        ledger_commit = writer.writer(ledger, apps[0])
        # After the ledger commit (the audit record): Argo CD / Flux see only approved states.
        branch = branch_for(git, pr.repo.clone_url, forge.clone_auth(pr.repo), settings)
        # While a rollback pins any app, moving the repo-wide branch would hand the
        # rolled-back change to the engine again: it waits for the revert to merge.
        moved, note = advance(branch, merge, sorted(p.app for p in desk.pins.pins(key)))
        if note:
            notes.append(note)
        if unpinned:
            notes.append(f"Unpinned {', '.join(f'`{a}`' for a in unpinned)}: this was the revert.")
        handed = engine_apps(apps)  # Argo CD / Flux apps: their engine deploys deploy_branch
        state, why = engine_handoff(branch, moved, ledger_commit)
        for app in handed:
            desk.status(forge, pr.repo, merge, app, state, why)
        pulled = [app for app in apps if app not in handed]
        if pulled:
            PullerFollower(desk).follow(
                forge, pr, ledger_commit, pulled, status_sha=merge, notes=notes
            )
        else:
            forge.create_comment(
                pr, engine_comment(merge, ledger_commit, handed, notes, desk.clock())
            )
        self._requeue_stale(forge, pr, settings, git, apps)

    def _requeue_stale(
        self, forge: Forge, pr: PullRequest, settings: RepoSettings, git: Git, apps: list[str]
    ) -> None:
        """Re-preview open PRs into the tracked branch that touch a just-deployed app."""
        requeue = self.desk.requeue_preview
        if requeue is None or pr.merge_sha is None:
            return
        try:
            known = repo_apps(git, pr.merge_sha, self.desk.cache_dir, settings.repo_urls)
            deployed = [a for a in known if a.name in apps]  # discovered apps too
            exports = ExportCache(self.desk.cache_dir / "exports")
            with exports.lease(git, pr.merge_sha) as root:
                for other in forge.open_pull_requests(pr.repo, settings.tracked_branch):
                    if other.number == pr.number:
                        continue
                    if affected_apps(deployed, forge.changed_files(other), root, root):
                        requeue(forge, other)
        except (ForgeError, GitError, OSError) as exc:
            log.warning("could not re-preview open PRs after %s: %s", pr.merge_sha[:12], exc)


def _merge_base_side(git: Git, pr: PullRequest) -> str:
    """The revision the merge is compared with (the tracked branch just before it)."""
    assert pr.merge_sha is not None
    if pr.merge_sha == pr.head_sha:  # fast-forward
        return pr.base_sha
    return git.resolve(f"{pr.merge_sha}^1")

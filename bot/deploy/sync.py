"""``/sync``: reconcile what a merged PR deployed, or preview-deploy an open PR's head.

On a merged PR, ``/sync [app…]`` wakes the puller for the apps (default: those
that run a revision from this PR) and reports what changed. On an open PR it
records a ``preview-deploy`` of the head, only for apps whose base
``.sluice.yaml`` says ``sync_before_merge: true`` and only when the gates pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config.server import RepoSettings
from bot.deploy.comments import MAX_LISTED_FAILURES, deploy_comment, outcomes_line
from bot.deploy.desk import DeployDesk, names
from bot.deploy.follow import PullerFollower, ResultPicker
from bot.deploy.gates import Gates, gate_config
from bot.deploy.ledger import LedgerEntry
from bot.deploy.ledger_writer import LedgerWriter, http_url
from bot.deploy.pins import repo_key
from bot.forge.base import Forge, PullRequest
from bot.report.escape import code


@dataclass
class Sync:
    """The ``/sync`` command."""

    desk: DeployDesk

    def sync(self, forge: Forge, pr: PullRequest, actor: str, apps: tuple[str, ...] = ()) -> str:
        """``/sync [app…]``: the reply text. See the module docstring."""
        desk = self.desk
        settings = desk.settings(pr.repo)
        if pr.state == "closed":
            return "`/sync`: this pull request was closed without merging; nothing of it deploys."
        if pr.state == "open":
            return self._sync_open(forge, pr, actor, apps, settings)
        assert pr.merge_sha is not None
        git = desk.mirror(forge, pr.repo, settings, [pr.merge_sha])
        ledger = LedgerWriter(desk).open(forge, git, pr.repo, settings)
        config = gate_config(git, f"refs/heads/{settings.tracked_branch}")
        unknown = [a for a in apps if config.app(a) is None]
        if unknown:
            return f"`/sync`: no app named {names(unknown)} in `.sluice.yaml`."
        targets = list(apps) or [
            a.name for a in config.apps if (e := ledger.read(a.name)) and e.pr == pr.number
        ]
        if not targets:
            return (f"`/sync`: no app runs a revision from #{pr.number} now; name the apps to "
                    "reconcile, e.g. `/sync web`.")  # fmt: skip
        if desk.puller is None:
            return "`/sync`: no puller is configured (SLUICE_PULLER_URL); nothing to wake."
        key = repo_key(pr.repo.forge, pr.repo.full_name)
        follower = PullerFollower(desk)
        with desk.locks.hold(key, targets):
            before = {app: follower.last_result(app) for app in targets}

            def changed(app: str) -> ResultPicker:
                return lambda s: s.last_result if s.last_result != before[app] else None

            outcomes = follower.wake_and_report(
                forge, pr, targets, changed, pr.merge_sha,
                f"### 🔁 Sluice sync requested by {code(actor)}", None, [], post=False,
            )  # fmt: skip
        # One reply per command: the summary line and the per-app table together.
        return (
            f"`/sync`: {outcomes_line(outcomes)}\n\n{deploy_comment('', '', outcomes, []).strip()}"
        )

    def _sync_open(
        self,
        forge: Forge,
        pr: PullRequest,
        actor: str,
        apps: tuple[str, ...],
        settings: RepoSettings,
    ) -> str:
        desk = self.desk
        git = desk.mirror(forge, pr.repo, settings, [pr.base_sha, pr.head_sha], pr.head_clone_url)
        gate = gate_config(git, pr.base_sha)  # deploy flags come from the base, like every gate
        unknown = [a for a in apps if gate.app(a) is None]
        if unknown:
            return f"`/sync`: no app named {names(unknown)} in the base's `.sluice.yaml`."
        gates = Gates(desk).check(forge, git, pr, settings, base=pr.base_sha, head=pr.head_sha,
                                  only_apps=apps)  # fmt: skip
        targets = list(apps) or gates.apps
        if not targets:
            return "`/sync`: this pull request affects no app."
        refused = [a for a in targets if not (gate.app(a) and gate.app(a).sync_before_merge)]
        if refused:
            return (
                f"`/sync` refused: this pull request is open, and {names(refused)} "
                f"{'does' if len(refused) == 1 else 'do'} not allow deploying before merge "
                "(`sync_before_merge: true` in the base's `.sluice.yaml` allows it, for staging "
                "apps). Merge the pull request to deploy it."
            )
        if not gates.passed:
            return (
                "`/sync` refused: these gates failed for the head "
                + code(pr.head_sha[:12])
                + (":\n" + "\n".join(f"- {f}" for f in gates.failures[:MAX_LISTED_FAILURES]))
            )
        key = repo_key(pr.repo.forge, pr.repo.full_name)
        with desk.locks.hold(key, targets):
            writer = LedgerWriter(desk)
            ledger = writer.open(forge, git, pr.repo, settings)
            entries = [
                LedgerEntry(app=app, revision=pr.head_sha, action="preview-deploy", pr=pr.number,
                            pr_url=http_url(pr.url), approved_by=gates.approved_by,
                            gates={**gates.summary, "requested_by": actor})
                for app in targets
            ]  # fmt: skip
            ledger_commit = writer.record(forge, pr, ledger, entries, status_sha=pr.head_sha)
            outcomes = PullerFollower(desk).follow(
                forge, pr, ledger_commit, targets, status_sha=pr.head_sha,
                heading=f"### 🧪 Sluice preview-deploy of {code(pr.head_sha[:12])}", post=False,
            )  # fmt: skip
        return (f"`/sync`: preview-deploy of {code(pr.head_sha[:12])} recorded in ledger commit "
                f"{code(ledger_commit[:12])}; {outcomes_line(outcomes)}\n\n"
                f"{deploy_comment('', '', outcomes, []).strip()}")  # fmt: skip

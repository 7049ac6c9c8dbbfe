"""Waking and following the puller, and reporting what it did on the pull request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.deploy.comments import (
    Outcome,
    comment_notes,
    deploy_comment,
    outcome_description,
    upsert_deploy_comment,
)
from bot.deploy.desk import DeployDesk
from bot.deploy.puller_client import AppStatus, LastResult, PullerError, PullerTimeout
from bot.forge.base import Forge, PullRequest
from bot.report.escape import code

#: Picks, from an app's status, the result being waited for (None: not there yet).
ResultPicker = Callable[[AppStatus], LastResult | None]


@dataclass
class PullerFollower:
    """Wakes the puller for some apps, waits for their results, reports them on a PR."""

    desk: DeployDesk

    def follow(
        self,
        forge: Forge,
        pr: PullRequest,
        ledger_commit: str,
        apps: list[str],
        *,
        status_sha: str,
        notes: list[str] | None = None,
        heading: str | None = None,
        post: bool = True,
    ) -> list[Outcome]:
        """Wake the puller for ``apps``, wait until it ran ``ledger_commit``, report on ``pr``."""

        def ran(status: AppStatus) -> LastResult | None:
            # Newest first. A wake-up that finds the deploy done already adds a "sync"
            # result after it: the deploy's own result is the one to report.
            results = [status.last_result, *status.history] if status.last_result else []
            return next((r for r in results if r.ledger_commit == ledger_commit
                         and r.action != "sync"), None)  # fmt: skip

        title = heading or f"### 🚀 Sluice deploy of {code(status_sha[:12])}"
        return self.wake_and_report(
            forge, pr, apps, lambda _app: ran, status_sha, title, ledger_commit, notes or [],
            post=post,
        )  # fmt: skip

    def wake_and_report(
        self,
        forge: Forge,
        pr: PullRequest,
        apps: list[str],
        result_for: Callable[[str], ResultPicker],
        status_sha: str,
        title: str,
        ledger_commit: str | None,
        notes: list[str],
        *,
        post: bool = True,
    ) -> list[Outcome]:
        """``post``: keep the one deploy comment for ``status_sha`` up to date (a merge);
        False when the caller answers in its own single reply (/sync, /rollback)."""
        desk = self.desk
        where = f" (ledger commit {code(ledger_commit[:12])})" if ledger_commit else ""
        if desk.puller is None:
            for app in apps:
                desk.status(forge, pr.repo, status_sha, app, "pending",
                            "approved in the ledger; waiting for the puller's next cycle")  # fmt: skip
            body = [title, "", f"Approved in the ledger{where}. No puller URL is configured, so "
                    "the puller picks it up on its next cycle and reports back.", *comment_notes(notes)]  # fmt: skip
            if post:
                upsert_deploy_comment(forge, pr, status_sha, "\n".join(body),
                                      desk.bot_login(forge), desk.clock())  # fmt: skip
            return []
        for app in apps:
            desk.status(forge, pr.repo, status_sha, app, "pending",
                        f"approved{' in ledger ' + ledger_commit[:12] if ledger_commit else ''}; "
                        "the puller is deploying")  # fmt: skip
        login = desk.bot_login(forge) if post else ""

        def show(outcomes: list[Outcome]) -> None:
            # The merge's one comment: every app "deploying" once the puller is woken,
            # then edited in place as each result comes in.
            rest = [Outcome(app, None, deploying=status_sha) for app in apps[len(outcomes) :]]
            body = deploy_comment(title, where, [*outcomes, *rest], notes)
            upsert_deploy_comment(forge, pr, status_sha, body, login, desk.clock())

        refused = {app: self._wake(app) for app in apps}
        outcomes: list[Outcome] = []
        for app in apps:
            if post:
                show(outcomes)
            outcomes.append(refused[app] or self._wait(app, result_for(app)))
        for outcome in outcomes:
            desk.status(forge, pr.repo, status_sha, outcome.app, outcome.state,
                        outcome_description(outcome))  # fmt: skip
            if ledger_commit and outcome.result is not None:
                record = desk.deploy_log.get(outcome.app, ledger_commit)
                if record is not None:
                    desk.deploy_log.mark_reported(record.id)
        if post:
            show(outcomes)
        return outcomes

    def last_result(self, app: str) -> LastResult | None:
        """The puller's latest result for ``app``; None when it has none or cannot say."""
        assert self.desk.puller is not None
        try:
            status = self.desk.puller.app(app)
        except PullerError:
            return None
        return status.last_result if status else None

    def _wake(self, app: str) -> Outcome | None:
        """Wake the puller for ``app``; the outcome when it could not be woken."""
        assert self.desk.puller is not None
        try:
            self.desk.puller.wake(app)
        except PullerError as exc:
            return Outcome(app, None, problem=str(exc))
        return None

    def _wait(self, app: str, result: ResultPicker) -> Outcome:
        """Wait until ``result`` picks, from ``app``'s status, what it awaits."""
        puller = self.desk.puller
        assert puller is not None
        try:
            status = puller.follow(
                app, lambda s: result(s) is not None, timeout_s=self.desk.follow_timeout_s,
                poll_s=self.desk.poll_s,
            )  # fmt: skip
        except PullerTimeout as exc:
            phase = f" (last phase: {exc.last.phase})" if exc.last else ""
            return Outcome(app, None, problem=f"timed out waiting for the puller{phase}; it "
                           "reports back when it finishes")  # fmt: skip
        except PullerError as exc:
            return Outcome(app, None, problem=str(exc))
        return Outcome(app, result(status), status.health)

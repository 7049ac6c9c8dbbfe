"""Puller events: a deploy result or drift, reported on the pull request that deployed."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.deploy.comments import (
    Outcome,
    changed_anything,
    deploy_comment,
    drift_comment,
    drift_gone_comment,
    outcome_description,
    update_deploy_row,
)
from bot.deploy.desk import DeployDesk
from bot.deploy.pins import DeployRecord
from bot.deploy.puller_client import LastResult, puller_event_problem
from bot.forge.base import Forge, PullRequest, RepoRef
from bot.report.escape import code

log = logging.getLogger(__name__)


@dataclass
class PullerEvents:
    """Handles ``puller-event`` jobs: statuses and comments for what the puller saw."""

    desk: DeployDesk

    def on_puller_event(
        self, forge_lookup: Callable[[str], Forge], event: Mapping[str, Any]
    ) -> None:
        """A ``puller-event`` job: report a deploy result or drift on the PR that deployed."""
        problem = puller_event_problem(dict(event))
        if problem is not None:
            raise ValueError(f"malformed puller event: {problem}")
        app = str(event["app"])
        record = self.desk.deploy_log.find(app, event.get("ledger_commit"))
        if record is None:
            log.warning("puller %s event for %s: no deploy of it by this bot", event["type"], app)
            return
        forge = forge_lookup(record.forge)
        repo = RepoRef(record.forge, record.repo, record.clone_url, record.project_id)  # type: ignore[arg-type]
        number = event.get("pr") or record.pr
        pr = forge.get_pull_request(repo, number) if number else None
        if event["type"] == "deploy":
            self._deploy_event(forge, repo, pr, record, event)
        else:
            self._drift_event(forge, repo, pr, record, event)

    def _deploy_event(
        self,
        forge: Forge,
        repo: RepoRef,
        pr: PullRequest | None,
        record: DeployRecord,
        event: Mapping[str, Any],
    ) -> None:
        result = LastResult.from_dict(event["result"])
        if result.action == "sync" and result.succeeded and not changed_anything(result):
            return  # a wake-up that found nothing to do: the deploy's status stands
        outcome = Outcome(record.app, result, result.health)
        self.desk.status(forge, repo, record.status_sha, record.app, outcome.state,
                         outcome_description(outcome))  # fmt: skip
        if pr is None:
            return
        # A failure about a ledger commit other than the one this record reported (a
        # refused ledger, an entry this bot never wrote) is news: the PR must hear it.
        alert = not result.succeeded and result.ledger_commit != record.ledger_commit
        if record.reported and not alert:
            return  # the deploy report is on the PR already (the bot followed it)
        self.desk.deploy_log.mark_reported(record.id)
        title = (
            f"### 🛑 The puller did not deploy {code(record.app)}"
            if alert
            else f"### 🚀 The puller finished {code(record.app)}"
        )
        # The app's row in this deploy's one comment is edited in place; a refusal
        # about another ledger commit is news of its own.
        fallback = deploy_comment(title, "", [outcome], [])
        bot_login = self.desk.bot_login(forge)
        if alert:
            forge.create_comment(pr, fallback)
        else:
            update_deploy_row(forge, pr, record.status_sha, outcome, bot_login, self.desk.clock(),
                              fallback)  # fmt: skip

    def _drift_event(
        self,
        forge: Forge,
        repo: RepoRef,
        pr: PullRequest | None,
        record: DeployRecord,
        event: Mapping[str, Any],
    ) -> None:
        drift = [d for d in event["drift"] if isinstance(d, dict)]
        fingerprint = (
            hashlib.sha256(json.dumps(drift, sort_keys=True).encode()).hexdigest()
            if drift
            else None
        )
        if not self.desk.deploy_log.set_drift(record.id, fingerprint):
            return  # the same drift was reported already
        app = record.app
        revision = str(event.get("revision") or record.status_sha)
        if not drift:
            self.desk.status(forge, repo, record.status_sha, app, "success",
                             f"no drift: the cluster matches {revision[:12]}")  # fmt: skip
            if pr is not None:
                forge.create_comment(pr, drift_gone_comment(app, revision, self.desk.clock()))
            return
        self.desk.status(forge, repo, record.status_sha, app, "failure",
                         f"drift: {len(drift)} objects differ from {revision[:12]}")  # fmt: skip
        if pr is not None:
            forge.create_comment(pr, drift_comment(app, revision, drift, self.desk.clock()))

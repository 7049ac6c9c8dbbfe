"""Push jobs: preview a direct push to the tracked branch on its commit, say why it is not deployed."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.forge.webhooks import PushEvent
from bot.models import Report
from bot.report import CommentContext, forge_budget, render_markdown
from bot.report.escape import code, mention
from bot.server.jobs.context import JobContext
from bot.server.jobs.preview import PreviewJobs
from bot.server.publish import (
    gate_statuses,
    pending_statuses,
    publish_commit_statuses,
    upsert_commit_report,
)
from bot.server.reports import publish_page
from bot.server.worker import CancelToken

log = logging.getLogger(__name__)

PUSH_TITLE = "Sluice (direct push)"
NO_DEPLOYS_NOTE = (
    "Deploys are not configured on this Sluice installation: nothing deploys from this push."
)


@dataclass
class PushJobs:
    """The ``push`` job."""

    ctx: JobContext

    def push(self, event: PushEvent, cancel: CancelToken) -> Report | None:
        """Preview ``before..after`` on the pushed commit; deploy only if the promoter says.

        Idempotent: a re-run edits (or, where the forge cannot, keeps) the one report
        comment on ``after`` and sets the same statuses.
        """
        ctx = self.ctx
        settings = ctx.config.repo_settings(event.forge, event.repo.full_name)
        if event.branch != settings.tracked_branch or event.created:
            log.info("%s: push to %s needs no preview", event.pr_key, event.after[:12])
            return None
        forge = ctx.forge(event.forge)
        publish_commit_statuses(forge, event.repo, event.after, pending_statuses())
        git = ctx.fetch_commits(forge, event.repo, [event.before, event.after])
        cancel.raise_if_cancelled()
        report = PreviewJobs(ctx).preview_range(git, event.before, event.after, settings)
        cancel.raise_if_cancelled()
        if ctx.promoter is None:
            deploy_note = NO_DEPLOYS_NOTE
        else:
            deploy_note = ctx.promoter.on_push(forge, event.repo, event.branch, event.after)
        pusher = mention(event.pusher) if event.pusher else "an unknown user"
        notes = [
            f"_Pushed directly to {code(event.branch)} by {pusher}"
            f"{' (forced)' if event.forced else ''}: `{event.before[:12]}..{event.after[:12]}`._",
            f"**Deploy:** {deploy_note}",
        ]
        context = publish_page(
            ctx.report_pages(), ctx.config.public_url, report, title=PUSH_TITLE,
            context=CommentContext(made_at=ctx.clock()),
        )  # fmt: skip
        body = render_markdown(report, title=PUSH_TITLE, extra=notes, context=context,
                               budget=forge_budget(forge.name))  # fmt: skip
        comment = upsert_commit_report(forge, event.repo, event.after, body, ctx.bot_login(forge))
        target = context.report_url or comment.url or None
        publish_commit_statuses(forge, event.repo, event.after, gate_statuses(report), target)
        return report

"""Preview jobs: render, diff and check a pull request, then publish its comment and statuses."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.config.server import RepoSettings
from bot.deploy import PullerClient, live_diffs, render_live_section
from bot.deploy.overrides import apply_override, pr_key, violations_fingerprint
from bot.errors import RetryableError
from bot.forge.base import Forge, PullRequest
from bot.forge.webhooks import PullRequestEvent
from bot.gitops import Git, GitError
from bot.models import Report
from bot.preview import PreviewError, PreviewOptions, run_preview
from bot.report import CommentContext, forge_budget, render_markdown
from bot.server.jobs.context import JobContext
from bot.server.publish import gate_statuses, pending_statuses, publish_statuses, upsert_report
from bot.server.reports import comment_context, mark_report_stale, publish_page
from bot.server.worker import CancelToken

log = logging.getLogger(__name__)

LIVE_OMITTED = "### Live cluster\n\n_Live diffs omitted: the comment has no room left for them._"


@dataclass
class PreviewJobs:
    """The ``preview`` job, and the preview steps that ``/diff`` and ``/approve-policy`` reuse."""

    ctx: JobContext

    def preview(
        self,
        event: PullRequestEvent,
        cancel: CancelToken,
        *,
        extra_apps: tuple[str, ...] = (),
    ) -> Report | None:
        forge = self.ctx.forge(event.forge)
        pr = forge.get_pull_request(event.repo, event.number)
        if pr.state != "open":
            return None
        if pr.head_sha != event.head_sha:
            log.info("%s moved on to %s; skipping stale preview", event.pr_key, pr.head_sha)
            return None
        settings = self.ctx.config.repo_settings(event.forge, pr.repo.full_name)
        if pr.draft and not settings.draft_previews:
            return None
        return self.preview_pr(forge, pr, settings, cancel, extra_apps=extra_apps)

    def preview_pr(
        self,
        forge: Forge,
        pr: PullRequest,
        settings: RepoSettings,
        cancel: CancelToken,
        *,
        extra_apps: tuple[str, ...] = (),
    ) -> Report:
        """Preview ``pr`` as it is now and publish the comment and statuses."""
        publish_statuses(forge, pr, pending_statuses())
        mark_report_stale(forge, pr, self.ctx.bot_login(forge))
        cancel.raise_if_cancelled()
        report = self.run_preview(forge, pr, settings, extra_apps)
        cancel.raise_if_cancelled()
        live = self.live_section(report)
        cancel.raise_if_cancelled()
        override = self.ctx.overrides.active(
            pr_key(pr.repo, pr.number), pr.head_sha, violations_fingerprint(report)
        )
        if override is not None:
            report = apply_override(report, override)
        self.publish(forge, pr, report, live)
        return report

    def publish(self, forge: Forge, pr: PullRequest, report: Report, live: str = "") -> None:
        notes = ["_Draft pull request: Sluice previews it; nothing deploys from a draft._"]
        config = self.ctx.config
        context = comment_context(config, forge, pr, self.ctx.clock())
        context = publish_page(
            self.ctx.report_pages(), config.public_url, report, title="Sluice", context=context
        )
        budget = forge_budget(forge.name)
        body = _render_with_live(report, notes if pr.draft else [], live, context, budget)
        comment = upsert_report(forge, pr, body, self.ctx.bot_login(forge))
        # The statuses link the full report page when there is one.
        target = context.report_url or comment.url or None
        publish_statuses(forge, pr, gate_statuses(report), target)

    def live_section(self, report: Report) -> str:
        """The "Live cluster" Markdown for ``report``; "" when no puller is configured.
        A puller that fails only says so in the section: the preview posts regardless."""
        puller = self._live_puller()
        if puller is None:
            return ""
        diffs = live_diffs(puller, report)
        for diff in diffs:
            if diff.problem is not None:
                log.warning("live diff of %s: %s", diff.app, diff.problem)
        return render_live_section(diffs)

    def _live_puller(self) -> PullerClient | None:
        ctx = self.ctx
        if not (ctx.config.puller_url and ctx.config.puller_token):
            return None
        if ctx.puller is not None:
            return ctx.puller
        return ctx.promoter.puller if ctx.promoter is not None else None

    def run_preview(
        self, forge: Forge, pr: PullRequest, settings: RepoSettings, extra_apps: tuple[str, ...]
    ) -> Report:
        """The report for ``pr``'s base..head (nothing published)."""
        git = self._fetch(forge, pr)
        return self.preview_range(git, pr.base_sha, pr.head_sha, settings, extra_apps)

    def preview_range(
        self,
        git: Git,
        base: str,
        head: str,
        settings: RepoSettings,
        extra_apps: tuple[str, ...] = (),
    ) -> Report:
        """The report for ``base..head`` in ``git``; a preview failure is worth a retry."""
        options = PreviewOptions(
            keys_dir=self.ctx.config.trusted_keys,
            extra_apps=extra_apps,
            policy_backend=settings.policy_engine,
            opa_url=settings.opa_url,
            cache_dir=self.ctx.cache_dir,
            repo_urls=settings.repo_urls,
        )
        try:
            return run_preview(git.path, base, head, options)
        except PreviewError as exc:
            raise RetryableError(f"preview of {head[:12]} failed: {exc}") from None

    def _fetch(self, forge: Forge, pr: PullRequest) -> Git:
        auth = forge.clone_auth(pr.repo)
        key = f"{forge.name}-{pr.repo.full_name}"
        mirrors = self.ctx.mirrors
        try:
            mirrors.fetch(key, pr.repo.clone_url, [pr.base_sha], auth=auth)
            head_url = pr.head_clone_url or pr.repo.clone_url
            return mirrors.fetch(key, head_url, [pr.head_sha], auth=auth)
        except GitError as exc:
            raise RetryableError(str(exc)) from None


def _render_with_live(
    report: Report, notes: list[str], live: str, context: CommentContext, budget: int
) -> str:
    """The PR comment with the live section last; it gives way if the budget is short."""
    options = {"title": "Sluice", "context": context, "budget": budget}
    for section in (live, LIVE_OMITTED) if live else ():
        try:
            return render_markdown(report, extra=[*notes, section], **options)
        except ValueError:
            continue  # the report itself needs the room
    return render_markdown(report, extra=notes or None, **options)

"""The bot's jobs: preview a pull request or a direct push, run chat-ops commands,
hand off merges.

The worker pool calls ``BotHandlers.handle`` for every claimed job. Handlers are
idempotent: a re-run edits the same comment and sets the same statuses, so
at-least-once execution never shows twice on a pull request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bot.commands import (
    CommandError,
    ParsedCommand,
    UnknownCommand,
    authorize,
    help_text,
    parse_commands,
    unknown_command_reply,
)
from bot.config.server import RepoSettings, ServerConfig
from bot.deploy.live_diff import live_diffs
from bot.deploy.live_report import render_live_section
from bot.deploy.overrides import (
    OverrideStore,
    apply_override,
    deny_violations,
    pr_key,
    violations_fingerprint,
)
from bot.deploy.promoter import Promoter
from bot.deploy.puller_client import PullerClient
from bot.forge.base import Forge, PullRequest, RepoRef
from bot.forge.webhooks import (
    CommentEvent,
    PullRequestEvent,
    PushEvent,
    event_from_dict,
    event_to_dict,
)
from bot.gitops import Git, GitError, Mirrors
from bot.models import Report
from bot.preview import PreviewError, PreviewOptions, run_preview
from bot.report import render_markdown
from bot.server.publish import (
    error_statuses,
    gate_statuses,
    pending_statuses,
    publish_commit_statuses,
    publish_statuses,
    upsert_commit_report,
    upsert_report,
)
from bot.server.queue import Job, JobQueue, NewJob
from bot.server.worker import CancelToken, JobRunner, RetryableError

log = logging.getLogger(__name__)

PULLER_EVENT = "puller-event"
PUSH_TITLE = "Sluice (direct push)"
LIVE_OMITTED = "### Live cluster\n\n_Live diffs omitted: the comment has no room left for them._"
NO_DEPLOYS_NOTE = (
    "Deploys are not configured on this Sluice installation: nothing deploys from this push."
)


@dataclass
class BotHandlers:
    config: ServerConfig
    forges: Mapping[str, Forge]
    mirrors: Mirrors
    overrides: OverrideStore
    cache_dir: Path
    # Merge-to-deploy; None when no bot signing key is configured (deploys are off).
    promoter: Promoter | None = None
    # The puller's API for the "Live cluster" preview section when there is no promoter
    # to share its client; neither: previews carry no live section.
    puller: PullerClient | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    # -- dispatch ---------------------------------------------------------------------

    def handle(self, job: Job, cancel: CancelToken) -> None:
        if job.kind == PULLER_EVENT:
            if self.promoter is not None:
                self.promoter.on_puller_event(self._forge, job.payload)
            return
        event = event_from_dict(job.payload)
        if isinstance(event, PushEvent):
            self.push(event, cancel)
        elif isinstance(event, CommentEvent):
            self.run_commands(event, cancel)
        elif job.kind == "preview":
            self.preview(event, cancel)
        elif job.kind == "merged":
            forge = self._forge(event.forge)
            pr = forge.get_pull_request(event.repo, event.number)
            if self.promoter is None:
                log.info("%s merged; deploys are not configured", job.pr_key)
            else:
                self.promoter.on_merged(forge, pr)
        elif job.kind == "closed":
            log.info("%s closed: nothing to clean up beyond cancelled jobs", job.pr_key)
        else:
            raise ValueError(f"unknown job kind {job.kind!r}")

    def give_up(self, job: Job, error: BaseException | str) -> None:
        """A job failed for good: say so on the PR instead of going quiet."""
        if job.kind == PULLER_EVENT:
            log.error("puller event job %s failed for good: %s", job.id, _one_line(str(error)))
            return
        event = event_from_dict(job.payload)
        forge = self._forge(event.forge)
        reason = _one_line(str(error))
        if isinstance(event, PushEvent):
            log.error("push job %s for %s failed for good: %s", job.id, job.pr_key, reason)
            message = f"Sluice failed: {reason}"[:140]
            publish_commit_statuses(forge, event.repo, event.after, error_statuses(message))
            return
        pr = forge.get_pull_request(event.repo, event.number)
        publish_statuses(forge, pr, error_statuses(f"Sluice failed: {reason}"[:140]))
        forge.create_comment(
            pr,
            f"🛑 Sluice could not finish its {job.kind} job for `{pr.head_sha[:12]}` after "
            f"{job.attempts} attempts: {reason}\n\nPush a commit or comment `/diff` to retry.",
        )

    # -- preview ----------------------------------------------------------------------

    def preview(
        self,
        event: PullRequestEvent,
        cancel: CancelToken,
        *,
        extra_apps: tuple[str, ...] = (),
    ) -> Report | None:
        forge = self._forge(event.forge)
        pr = forge.get_pull_request(event.repo, event.number)
        if pr.state != "open":
            return None
        if pr.head_sha != event.head_sha:
            log.info("%s moved on to %s; skipping stale preview", event.pr_key, pr.head_sha)
            return None
        settings = self.config.repo_settings(event.forge, pr.repo.full_name)
        if pr.draft and not settings.draft_previews:
            return None
        return self._preview_pr(forge, pr, settings, cancel, extra_apps=extra_apps)

    def _preview_pr(
        self,
        forge: Forge,
        pr: PullRequest,
        settings: RepoSettings,
        cancel: CancelToken,
        *,
        extra_apps: tuple[str, ...] = (),
    ) -> Report:
        publish_statuses(forge, pr, pending_statuses())
        cancel.raise_if_cancelled()
        report = self._run_preview(forge, pr, settings, extra_apps)
        cancel.raise_if_cancelled()
        live = self._live_section(report)
        cancel.raise_if_cancelled()
        override = self.overrides.active(
            pr_key(pr.repo, pr.number), pr.head_sha, violations_fingerprint(report)
        )
        if override is not None:
            report = apply_override(report, override)
        self._publish(forge, pr, report, live)
        return report

    def _publish(self, forge: Forge, pr: PullRequest, report: Report, live: str = "") -> None:
        notes = ["_Draft pull request: Sluice previews it; nothing deploys from a draft._"]
        body = _render_with_live(report, notes if pr.draft else [], live)
        comment = upsert_report(forge, pr, body, self._bot_login(forge))
        publish_statuses(forge, pr, gate_statuses(report), comment.url or None)

    def _live_section(self, report: Report) -> str:
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
        if not (self.config.puller_url and self.config.puller_token):
            return None
        if self.puller is not None:
            return self.puller
        return self.promoter.puller if self.promoter is not None else None

    def _run_preview(
        self, forge: Forge, pr: PullRequest, settings: RepoSettings, extra_apps: tuple[str, ...]
    ) -> Report:
        git = self._fetch(forge, pr)
        return self._preview_range(git, pr.base_sha, pr.head_sha, settings, extra_apps)

    def _preview_range(
        self,
        git: Git,
        base: str,
        head: str,
        settings: RepoSettings,
        extra_apps: tuple[str, ...] = (),
    ) -> Report:
        options = PreviewOptions(
            keys_dir=self.config.trusted_keys,
            extra_apps=extra_apps,
            policy_backend=settings.policy_engine,
            opa_url=settings.opa_url,
            cache_dir=self.cache_dir,
        )
        try:
            return run_preview(git.path, base, head, options)
        except PreviewError as exc:
            raise RetryableError(f"preview of {head[:12]} failed: {exc}") from None

    def _fetch(self, forge: Forge, pr: PullRequest) -> Git:
        auth = forge.clone_auth(pr.repo)
        key = f"{forge.name}-{pr.repo.full_name}"
        try:
            self.mirrors.fetch(key, pr.repo.clone_url, [pr.base_sha], auth=auth)
            head_url = pr.head_clone_url or pr.repo.clone_url
            return self.mirrors.fetch(key, head_url, [pr.head_sha], auth=auth)
        except GitError as exc:
            raise RetryableError(str(exc)) from None

    # -- direct push to the tracked branch ---------------------------------------------

    def push(self, event: PushEvent, cancel: CancelToken) -> Report | None:
        """Preview ``before..after`` on the pushed commit; deploy only if the promoter says.

        Idempotent: a re-run edits (or, where the forge cannot, keeps) the one report
        comment on ``after`` and sets the same statuses.
        """
        settings = self.config.repo_settings(event.forge, event.repo.full_name)
        if event.branch != settings.tracked_branch or event.created:
            log.info("%s: push to %s needs no preview", event.pr_key, event.after[:12])
            return None
        forge = self._forge(event.forge)
        publish_commit_statuses(forge, event.repo, event.after, pending_statuses())
        git = self._fetch_commits(forge, event.repo, [event.before, event.after])
        cancel.raise_if_cancelled()
        report = self._preview_range(git, event.before, event.after, settings)
        cancel.raise_if_cancelled()
        if self.promoter is None:
            deploy_note = NO_DEPLOYS_NOTE
        else:
            deploy_note = self.promoter.on_push(forge, event.repo, event.branch, event.after)
        notes = [
            f"_Pushed directly to `{event.branch}` by @{event.pusher or 'unknown'}"
            f"{' (forced)' if event.forced else ''}: `{event.before[:12]}..{event.after[:12]}`._",
            f"**Deploy:** {deploy_note}",
        ]
        body = render_markdown(report, title=PUSH_TITLE, extra=notes)
        comment = upsert_commit_report(forge, event.repo, event.after, body, self._bot_login(forge))
        publish_commit_statuses(
            forge, event.repo, event.after, gate_statuses(report), comment.url or None
        )
        return report

    def _fetch_commits(self, forge: Forge, repo: RepoRef, shas: list[str]) -> Git:
        try:
            return self.mirrors.fetch(
                f"{forge.name}-{repo.full_name}", repo.clone_url, shas, auth=forge.clone_auth(repo)
            )
        except GitError as exc:
            raise RetryableError(str(exc)) from None

    # -- commands ---------------------------------------------------------------------

    def run_commands(self, event: CommentEvent, cancel: CancelToken) -> None:
        if event.action != "created" or not event.is_pull_request:
            return  # edited comments are never re-run
        forge = self._forge(event.forge)
        bot_login = self._bot_login(forge)
        if event.author_is_bot or event.author.lower() == bot_login.lower():
            return
        parsed = parse_commands(event.body, bot_login)
        if not parsed:
            return
        pr = forge.get_pull_request(event.repo, event.number)
        settings = self.config.repo_settings(event.forge, pr.repo.full_name)
        for item in parsed:
            cancel.raise_if_cancelled()
            if isinstance(item, UnknownCommand):
                self._reply(forge, pr, event, unknown_command_reply(item.name))
            elif isinstance(item, CommandError):
                self._reply(forge, pr, event, f"`{item.raw.strip()}`: {item.message}")
            else:
                self._run_command(forge, pr, settings, event, item, cancel)

    def _run_command(
        self,
        forge: Forge,
        pr: PullRequest,
        settings: RepoSettings,
        event: CommentEvent,
        command: ParsedCommand,
        cancel: CancelToken,
    ) -> None:
        decision = authorize(
            command,
            event.author,
            rules=settings.command_rules(),
            permission_of=lambda user: forge.permission(pr.repo, user),
            is_member=lambda team, user: forge.is_member(pr.repo, team, user),
            pr_is_fork=pr.is_fork,
            is_bot_self=False,
        )
        if not decision.allowed:
            self._reply(forge, pr, event, f"🚫 {decision.reason}")
            return
        forge.add_reaction(pr, event.comment_id, "eyes")
        if command.name == "help":
            self._reply(forge, pr, event, help_text(self._bot_login(forge)))
        elif command.name in ("diff", "policy"):
            self._rerun(forge, pr, settings, event, command, cancel)
        elif command.name == "approve-policy":
            self._approve_policy(forge, pr, settings, event, command, cancel)
        elif self.promoter is None:
            self._reply(
                forge,
                pr,
                event,
                f"`/{command.name}`: deploys are not configured for this repository "
                "(no bot signing key is configured on this Sluice installation).",
            )
        elif command.name == "sync":
            self._reply(forge, pr, event, self.promoter.sync(forge, pr, event.author, command.args))
        elif command.name == "rollback":
            reply = self.promoter.rollback(
                forge, pr, event.author, command.args, command.options.get("to")
            )
            self._reply(forge, pr, event, reply)

    def _rerun(
        self,
        forge: Forge,
        pr: PullRequest,
        settings: RepoSettings,
        event: CommentEvent,
        command: ParsedCommand,
        cancel: CancelToken,
    ) -> None:
        if pr.state != "open":
            self._reply(forge, pr, event, f"`/{command.name}`: this pull request is not open.")
            return
        report = self._preview_pr(forge, pr, settings, cancel, extra_apps=command.args)
        missing = sorted(set(command.args) - {app.name for app in report.apps})
        if missing:
            self._reply(
                forge,
                pr,
                event,
                f"`/{command.name}`: no app named {', '.join(f'`{m}`' for m in missing)} "
                "in `.sluice.yaml`.",
            )

    def _approve_policy(
        self,
        forge: Forge,
        pr: PullRequest,
        settings: RepoSettings,
        event: CommentEvent,
        command: ParsedCommand,
        cancel: CancelToken,
    ) -> None:
        report = self._run_preview(forge, pr, settings, ())
        cancel.raise_if_cancelled()
        if not deny_violations(report):
            self._reply(forge, pr, event, "`/approve-policy`: there are no deny violations.")
            return
        override = self.overrides.record(
            pr_key(pr.repo, pr.number),
            pr.head_sha,
            violations_fingerprint(report),
            event.author,
            command.reason or "",
            self.clock(),
        )
        log.info(
            "policy override %s by %s on %s at %s",
            override.id,
            event.author,
            pr_key(pr.repo, pr.number),
            pr.head_sha,
        )
        live = self._live_section(report)
        self._publish(forge, pr, apply_override(report, override), live)

    def _reply(self, forge: Forge, pr: PullRequest, event: CommentEvent, text: str) -> None:
        forge.create_comment(pr, f"@{event.author} {text}")

    # -- helpers ----------------------------------------------------------------------

    def _forge(self, name: str) -> Forge:
        try:
            return self.forges[name]
        except KeyError:
            raise ValueError(f"forge {name!r} is not configured") from None

    def _bot_login(self, forge: Forge) -> str:
        return self.config.bot_login or forge.bot_login()


def _render_with_live(report: Report, notes: list[str], live: str) -> str:
    """The PR comment with the live section last; it gives way if the budget is short."""
    for section in (live, LIVE_OMITTED) if live else ():
        try:
            return render_markdown(report, title="Sluice", extra=[*notes, section])
        except ValueError:
            continue  # the report itself needs the room
    return render_markdown(report, title="Sluice", extra=notes or None)


def _one_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line[:300]


def build_forges(config: ServerConfig) -> dict[str, Forge]:
    """One client per enabled forge, from the server config."""
    from bot.forge.github import GitHubForge
    from bot.forge.gitlab import GitLabForge

    forges: dict[str, Forge] = {}
    if config.github is not None:
        github = config.github
        if github.uses_app:
            key_file = github.app_private_key_file
            forges["github"] = GitHubForge(
                base_url=github.api_url,
                app_id=int(github.app_id or 0),
                private_key=key_file.read_text() if key_file else None,
                installation_id=github.app_installation_id,
            )
        else:
            forges["github"] = GitHubForge(base_url=github.api_url, token=github.token)
    if config.gitlab is not None:
        forges["gitlab"] = GitLabForge(url=config.gitlab.url, token=config.gitlab.token)
    return forges


def job_runner(config: ServerConfig) -> JobRunner:
    """The handlers ``sluice serve``'s job process runs (see ``bot.server.serve``)."""
    mirrors = Mirrors(config.data_dir / "mirrors")
    overrides = OverrideStore(config.db_path)
    cache_dir = config.data_dir / "cache"
    queue = JobQueue(config.db_path)
    promoter = Promoter.from_config(
        config,
        mirrors=mirrors,
        overrides=overrides,
        cache_dir=cache_dir,
        requeue_preview=lambda forge, pr: queue.enqueue(preview_job(forge, pr)),
    )
    puller = None
    if promoter is None and config.puller_url and config.puller_token:
        puller = PullerClient(config.puller_url, config.puller_token)
    handlers = BotHandlers(
        config=config,
        forges=build_forges(config),
        mirrors=mirrors,
        overrides=overrides,
        cache_dir=cache_dir,
        promoter=promoter,
        puller=puller,
    )
    return JobRunner(handlers.handle, on_give_up=handlers.give_up)


def preview_job(forge: Forge, pr: PullRequest) -> NewJob:
    """A preview of ``pr`` as it is now (used when its base moved under it)."""
    event = PullRequestEvent(
        forge=forge.name,
        repo=pr.repo,
        number=pr.number,
        action="synchronize",
        head_sha=pr.head_sha,
        base_sha=pr.base_sha,
        base_ref=pr.base_ref,
        head_ref=pr.head_ref,
        draft=pr.draft,
        is_fork=pr.is_fork,
        author=pr.author,
        base_changed=True,
        title=pr.title,
        head_clone_url=pr.head_clone_url,
    )
    return NewJob(
        "preview",
        forge.name,
        pr.repo.full_name,
        event.pr_key,
        event_to_dict(event),
        head_sha=pr.head_sha,
        supersedes=True,
    )

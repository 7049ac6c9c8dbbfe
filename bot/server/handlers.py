"""The job dispatcher: hands each claimed job to its kind's handler, and wires them for serve.

The worker pool calls ``BotHandlers.handle`` for every claimed job; the handlers
themselves live in ``bot.server.jobs``, one module per job kind. Handlers are
idempotent: a re-run edits the same comment and sets the same statuses, so
at-least-once execution never shows twice on a pull request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bot.config.server import ServerConfig
from bot.deploy import OverrideStore, Promoter, PullerClient
from bot.forge.base import Forge, PullRequest
from bot.forge.retry import Retrier, WriteBudget, WritePacer
from bot.forge.webhooks import (
    CommentEvent,
    PullRequestEvent,
    PushEvent,
    event_from_dict,
    event_to_dict,
)
from bot.gitops import Mirrors
from bot.report.escape import text
from bot.server.jobs import NO_DEPLOYS_NOTE, CommandJobs, JobContext, PreviewJobs, PushJobs
from bot.server.publish import error_statuses, publish_commit_statuses, publish_statuses
from bot.server.reports import open_pages
from bot.server.storage import open_for
from bot.server.storage.budget import SharedWriteBudget, budget_key
from bot.server.storage.queue import Job, JobQueue, NewJob
from bot.server.worker import CancelToken, JobRunner

__all__ = ["NO_DEPLOYS_NOTE", "PULLER_EVENT", "BotHandlers", "build_forges", "job_runner"]

log = logging.getLogger(__name__)

PULLER_EVENT = "puller-event"


@dataclass
class BotHandlers(JobContext):
    """Runs one claimed job: previews, pushes and commands here, merges and puller events
    through the promoter (absent when deploys are off)."""

    def handle(self, job: Job, cancel: CancelToken) -> None:
        if job.kind == PULLER_EVENT:
            if self.promoter is not None:
                self.promoter.on_puller_event(self.forge, job.payload)
            return
        event = event_from_dict(job.payload)
        if isinstance(event, PushEvent):
            PushJobs(self).push(event, cancel)
        elif isinstance(event, CommentEvent):
            CommandJobs(self).run_commands(event, cancel)
        elif job.kind == "preview":
            PreviewJobs(self).preview(event, cancel)
        elif job.kind == "merged":
            forge = self.forge(event.forge)
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
        forge = self.forge(event.forge)
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
            f"{job.attempts} attempts: {text(reason)}\n\nPush a commit or comment `/diff` to retry.",
        )


def _one_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line[:300]


def build_forges(config: ServerConfig, budget: WriteBudget | None = None) -> dict[str, Forge]:
    """One client per enabled forge, from the server config.

    With ``budget`` (several replicas), each token's write budget and the waits its
    server asks for are shared by every replica.
    """
    from bot.forge.github import GitHubForge
    from bot.forge.gitlab import GitLabForge

    def paced(forge: str, url: str, credential: str) -> dict[str, Any]:
        storage = config.storage
        pacer = WritePacer(
            storage.write_limit,
            storage.write_window_s,
            shared=budget,
            key=budget_key(forge, url, credential),
        )
        return {"write_pacer": pacer, "retrier": Retrier(on_wait_hint=pacer.pause)}

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
                **paced(
                    "github", github.api_url, f"app:{github.app_id}:{github.app_installation_id}"
                ),
            )
        else:
            forges["github"] = GitHubForge(
                base_url=github.api_url,
                token=github.token,
                **paced("github", github.api_url, github.token or ""),
            )
    if config.gitlab is not None:
        gitlab = config.gitlab
        forges["gitlab"] = GitLabForge(
            url=gitlab.url, token=gitlab.token, **paced("gitlab", gitlab.url, gitlab.token or "")
        )
    return forges


def job_runner(config: ServerConfig) -> JobRunner:
    """The handlers ``sluice serve``'s job process runs (see ``bot.server.serve``)."""
    database = open_for(config, max_connections=config.workers + 2)
    mirrors = Mirrors(config.data_dir / "mirrors")
    overrides = OverrideStore(database)
    cache_dir = config.data_dir / "cache"
    queue = JobQueue(database, replica=config.storage.replica_id)
    promoter = Promoter.from_config(
        config,
        mirrors=mirrors,
        database=database,
        overrides=overrides,
        cache_dir=cache_dir,
        requeue_preview=lambda forge, pr: queue.enqueue(preview_job(forge, pr)),
    )
    puller = None
    if promoter is None and config.puller_url and config.puller_token:
        puller = PullerClient(config.puller_url, config.puller_token)
    handlers = BotHandlers(
        config=config,
        forges=build_forges(
            config, SharedWriteBudget(database) if config.storage.replicated else None
        ),
        mirrors=mirrors,
        overrides=overrides,
        cache_dir=cache_dir,
        promoter=promoter,
        puller=puller,
        pages=open_pages(config.data_dir, database=database) if config.storage.replicated else None,
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

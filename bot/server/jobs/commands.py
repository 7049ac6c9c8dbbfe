"""Comment jobs: parse, authorize and run the chat-ops commands in a pull request comment."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from bot.commands import (
    CommandError,
    ParsedCommand,
    UnknownCommand,
    authorize,
    help_text,
    parse_commands,
    unknown_command_reply,
)
from bot.config.server import RepoSettings
from bot.deploy.overrides import apply_override, deny_violations, pr_key, violations_fingerprint
from bot.forge.base import Forge, PullRequest
from bot.forge.webhooks import CommentEvent
from bot.report.escape import code, reply, text
from bot.server.jobs.context import JobContext
from bot.server.jobs.preview import PreviewJobs
from bot.server.worker import CancelToken

log = logging.getLogger(__name__)


@dataclass
class CommandJobs:
    """The ``comment`` job: one reply per command; deploy commands go to the promoter."""

    ctx: JobContext

    def run_commands(self, event: CommentEvent, cancel: CancelToken) -> None:
        if event.action != "created" or not event.is_pull_request:
            return  # edited comments are never re-run
        ctx = self.ctx
        forge = ctx.forge(event.forge)
        bot_login = ctx.bot_login(forge)
        if event.author_is_bot or event.author.lower() == bot_login.lower():
            return
        parsed = parse_commands(event.body, bot_login)
        if not parsed:
            return
        pr = forge.get_pull_request(event.repo, event.number)
        settings = ctx.config.repo_settings(event.forge, pr.repo.full_name)
        for item in parsed:
            cancel.raise_if_cancelled()
            if isinstance(item, UnknownCommand):
                _reply(forge, pr, event, unknown_command_reply(item.name))
            elif isinstance(item, CommandError):
                _reply(forge, pr, event, f"{code(item.raw.strip())}: {text(item.message)}")
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
            _reply(forge, pr, event, f"🚫 {decision.reason}")
            return
        forge.add_reaction(pr, event.comment_id, "eyes")
        promoter = self.ctx.promoter
        if command.name == "help":
            _reply(forge, pr, event, help_text(self.ctx.bot_login(forge), settings.command_rules()))
        elif command.name in ("diff", "policy"):
            self._rerun(forge, pr, settings, event, command, cancel)
        elif command.name == "approve-policy":
            self._approve_policy(forge, pr, settings, event, command, cancel)
        elif promoter is None:
            _reply(
                forge,
                pr,
                event,
                f"`/{command.name}`: deploys are not configured for this repository "
                "(no bot signing key is configured on this Sluice installation).",
            )
        elif command.name == "sync":
            _reply(forge, pr, event, promoter.sync(forge, pr, event.author, command.args))
        elif command.name == "rollback":
            reply = promoter.rollback(
                forge, pr, event.author, command.args, command.options.get("to")
            )
            _reply(forge, pr, event, reply)

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
            _reply(forge, pr, event, f"`/{command.name}`: this pull request is not open.")
            return
        previews = PreviewJobs(self.ctx)
        report = previews.preview_pr(forge, pr, settings, cancel, extra_apps=command.args)
        missing = sorted(set(command.args) - {app.name for app in report.apps})
        if missing:
            _reply(
                forge,
                pr,
                event,
                f"`/{command.name}`: no app named {', '.join(code(m) for m in missing)} "
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
        previews = PreviewJobs(self.ctx)
        report = previews.run_preview(forge, pr, settings, ())
        cancel.raise_if_cancelled()
        if not deny_violations(report):
            _reply(forge, pr, event, "`/approve-policy`: there are no deny violations.")
            return
        override = self.ctx.overrides.record(
            pr_key(pr.repo, pr.number),
            pr.head_sha,
            violations_fingerprint(report),
            event.author,
            command.reason or "",
            self.ctx.clock(),
        )
        log.info(
            "policy override %s by %s on %s at %s",
            override.id,
            event.author,
            pr_key(pr.repo, pr.number),
            pr.head_sha,
        )
        live = previews.live_section(report)
        previews.publish(forge, pr, apply_override(report, override), live)


def _reply(forge: Forge, pr: PullRequest, event: CommentEvent, text: str) -> None:
    # Jobs run at least once (a replica may die between the reply and recording that
    # the job is done): a hidden marker names the command comment and the reply, and a
    # re-run that finds it posts nothing twice.
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    marker = f"<!-- sluice:reply {event.comment_id} {digest} -->"
    if any(marker in c.body for c in forge.list_comments(pr)):
        return
    # The mention on its own line: a reply that starts with a heading still renders.
    forge.create_comment(pr, reply(event.author, text) + "\n\n" + marker)

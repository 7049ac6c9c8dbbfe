"""The bot's job handlers, one module per job kind: previews, direct pushes, chat-ops commands."""

from bot.server.jobs.commands import CommandJobs
from bot.server.jobs.context import JobContext
from bot.server.jobs.preview import PreviewJobs
from bot.server.jobs.push import NO_DEPLOYS_NOTE, PUSH_TITLE, PushJobs

__all__ = ["NO_DEPLOYS_NOTE", "PUSH_TITLE", "CommandJobs", "JobContext", "PreviewJobs", "PushJobs"]

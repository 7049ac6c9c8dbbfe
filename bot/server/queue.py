"""Moved to ``bot.server.storage.queue``; this name stays until every import has moved."""

from bot.server.storage.queue import *  # noqa: F403
from bot.server.storage.queue import DURATION_BUCKETS, Job, JobQueue, NewJob  # noqa: F401

"""The webhook bot (``sluice serve``): intake, durable jobs, workers, handlers, publishing, metrics.

Where to start reading: ``serve`` (the supervisor and its processes), ``web`` (the
webhook intake: verify, parse, enqueue), ``worker`` (the pool that runs jobs),
``handlers`` (which job goes where) and ``jobs`` (one module per job kind). The
names below load lazily: the HTTP process never loads the job handlers.
"""

from bot.lazy import lazy_exports

_EXPORTS = {
    "BotHandlers": "bot.server.handlers",
    "build_forges": "bot.server.handlers",
    "job_runner": "bot.server.handlers",
    "create_app": "bot.server.web",
    "job_for": "bot.server.web",
    "CancelToken": "bot.server.worker",
    "JobRunner": "bot.server.worker",
    "RetryableError": "bot.server.worker",
    "WorkerPool": "bot.server.worker",
    "run": "bot.server.serve",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

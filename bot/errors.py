"""Error types that job code raises and the worker pool understands, shared by server and deploy."""

from __future__ import annotations


class RetryableError(Exception):
    """A transient failure: run the job again later (``delay_s`` overrides the backoff)."""

    def __init__(self, message: str, *, delay_s: float | None = None):
        super().__init__(message)
        self.delay_s = delay_s

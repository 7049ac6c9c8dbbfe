"""Error types shared across the applications: a job's retryable failure, a ledger failure."""

from __future__ import annotations


class RetryableError(Exception):
    """A transient failure: run the job again later (``delay_s`` overrides the backoff)."""

    def __init__(self, message: str, *, delay_s: float | None = None):
        super().__init__(message)
        self.delay_s = delay_s


class LedgerError(RuntimeError):
    """The ledger is missing, malformed, untrusted or could not be written."""

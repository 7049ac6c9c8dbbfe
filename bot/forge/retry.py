"""Retries and write pacing shared by both forge backends.

Backends translate their client library's exceptions into ``TransientError``
(with the server's wait hint, if any) and let ``Retrier`` decide when to try
again. ``WritePacer`` keeps content writes under the forge's secondary limit.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from bot.forge.base import ForgeError

T = TypeVar("T")


class TransientError(Exception):
    """A failure worth retrying: 5xx, 429, secondary rate limit, timeout, dropped connection."""

    def __init__(self, message: str, *, status: int | None = None, wait_s: float | None = None):
        super().__init__(message)
        self.status = status
        self.wait_s = wait_s


def wait_hint(headers: dict[str, str] | None, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from Retry-After or X-RateLimit-Reset."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after = lowered.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return None
    remaining = lowered.get("x-ratelimit-remaining")
    reset = lowered.get("x-ratelimit-reset") or lowered.get("ratelimit-reset")
    if remaining == "0" and reset is not None:
        try:
            return max(0.0, float(reset) - (time.time() if now is None else now))
        except ValueError:
            return None
    return None


@dataclass
class Retrier:
    """Call a function until it succeeds, retrying ``TransientError`` with backoff."""

    attempts: int = 5
    base_delay_s: float = 0.2
    max_delay_s: float = 30.0
    # Waits longer than this are not slept through: the job is retried later instead.
    max_wait_s: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except TransientError as exc:
                if attempt == self.attempts:
                    raise ForgeError(
                        f"{operation} failed after {attempt} attempts: {exc}",
                        status=exc.status,
                        transient=True,
                    ) from None
                delay = self._delay(attempt, exc.wait_s)
                if delay > self.max_wait_s:
                    raise ForgeError(
                        f"{operation}: server asked to wait {delay:.0f}s",
                        status=exc.status,
                        transient=True,
                    ) from None
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, hint: float | None) -> float:
        if hint is not None:
            return hint
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)


class WritePacer:
    """At most ``limit`` content writes in any ``window_s`` seconds (thread-safe)."""

    def __init__(
        self,
        limit: int = 80,
        window_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                while self._stamps and now - self._stamps[0] >= self.window_s:
                    self._stamps.popleft()
                if len(self._stamps) < self.limit:
                    self._stamps.append(now)
                    return
                wait = self.window_s - (now - self._stamps[0])
            self._sleep(max(wait, 0.01))

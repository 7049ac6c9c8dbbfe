"""Retries and write pacing shared by both forge backends.

Backends translate their client library's exceptions into ``TransientError``
(with the server's wait hint, if any) and let ``Retrier`` decide when to try
again. ``WritePacer`` keeps content writes under the forge's secondary limit.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

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
    #: Told each wait the server asked for (``WritePacer.pause`` shares it fleet-wide).
    on_wait_hint: Callable[[float], None] | None = field(default=None, repr=False)

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except TransientError as exc:
                if exc.wait_s and self.on_wait_hint is not None:
                    self.on_wait_hint(exc.wait_s)
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


class WriteBudget(Protocol):
    """A write budget shared by every replica (``bot.server.storage`` keeps it)."""

    def take(self, key: str, limit: int, window_s: float, slot: str) -> float:
        """Take a write slot named ``slot``: 0 if taken, else seconds to wait and ask again."""
        ...

    def settle(self, key: str, slot: str) -> None:
        """The write of ``slot`` finished: it counts from now (it reached the server by now)."""
        ...

    def pause(self, key: str, seconds: float) -> None:
        """No replica writes with ``key`` for ``seconds`` (the server said so)."""
        ...


class WritePacer:
    """At most ``limit`` content writes in any ``window_s`` seconds (thread-safe).

    A write counts from when it was allowed until ``window_s`` after it finished, so
    however long a request takes to reach the server, no window the server measures
    holds more than ``limit`` of them. With ``shared``, the budget and any pause are
    kept in the shared store under ``key`` (one per token), so every replica
    together stays under the limit.
    """

    def __init__(
        self,
        limit: int = 80,
        window_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        shared: WriteBudget | None = None,
        key: str = "default",
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._shared = shared
        self._key = key
        self._stamps: dict[int, float] = {}  # slot -> when it counts from
        self._next = 0
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Honour a server's Retry-After / X-RateLimit-Reset: no write for ``seconds``."""
        if self._shared is not None:
            self._shared.pause(self._key, seconds)
            return
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for a write slot, write inside the block; the slot counts until it ends."""
        name = self._take()
        try:
            yield
        finally:
            self._settle(name)

    def acquire(self) -> None:
        """Take a slot for a write that happens right away (it counts from now)."""
        self._take()

    def _take(self) -> str:
        if self._shared is not None:
            name = uuid.uuid4().hex
            while (wait := self._shared.take(self._key, self.limit, self.window_s, name)) > 0:
                self._sleep(min(max(wait, 0.01), self.window_s))
            return name
        while True:
            with self._lock:
                now = self._clock()
                wait = self._paused_until - now
                if wait <= 0:
                    for number, stamp in list(self._stamps.items()):
                        if now - stamp >= self.window_s:
                            del self._stamps[number]
                    if len(self._stamps) < self.limit:
                        self._next += 1
                        self._stamps[self._next] = now
                        return str(self._next)
                    wait = self.window_s - (now - min(self._stamps.values()))
            self._sleep(max(wait, 0.01))

    def _settle(self, name: str) -> None:
        if self._shared is not None:
            self._shared.settle(self._key, name)
            return
        with self._lock:
            if int(name) in self._stamps:
                self._stamps[int(name)] = self._clock()

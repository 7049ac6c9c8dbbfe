"""Running one forge API call: retries, write pacing, and keeping the token out of errors."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import TypeVar

from bot.forge.base import ForgeError
from bot.forge.retry import Retrier, WritePacer

T = TypeVar("T")


class ForgeCalls:
    """What both backends do around every API call; each maps only its own client's errors."""

    def __init__(self, retrier: Retrier, pacer: WritePacer, secret: str | None, mask: str) -> None:
        self.retrier = retrier
        self.pacer = pacer
        self._secret = secret
        self._mask = mask

    def run(self, operation: str, attempt: Callable[[], T], *, write: bool = False) -> T:
        """``attempt`` under the retrier (paced as a write when ``write``); errors scrubbed."""

        def paced() -> T:
            with self.pacer.slot() if write else nullcontext():
                return attempt()

        try:
            return self.retrier.call(operation, paced)
        except ForgeError as exc:
            # Defence in depth: nothing we raise may carry the token, whatever the server said.
            message = self.scrub(str(exc))
            if message == str(exc):
                raise
            raise ForgeError(message, status=exc.status, transient=exc.transient) from None

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, self._mask) if self._secret else text


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

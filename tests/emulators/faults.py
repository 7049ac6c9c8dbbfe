"""Fault scheduling shared by the API emulators: scripted faults and random ones."""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class ScriptedFault:
    """A fault for the next request matching ``method`` and ``path`` (None: any)."""

    fault: Any
    method: str | None
    path: re.Pattern[str] | None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.search(path) is not None


@dataclass
class RandomFaults:
    """One of ``faults`` for a ``fraction`` of requests, drawn from a seeded ``rng``."""

    fraction: float
    faults: tuple[Any, ...]
    rng: random.Random


class FaultSchedule:
    """The faults an emulator still has to play: scripted ones first, then random ones.

    Thread-safe; each emulator keeps one and maps its own ``Fault`` type onto it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: list[ScriptedFault] = []
        self._random: RandomFaults | None = None

    def inject(self, faults: tuple[Any, ...], method: str | None, path: str | None) -> None:
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            self._script.extend(ScriptedFault(fault, method, pattern) for fault in faults)

    def fail_randomly(self, fraction: float, faults: tuple[Any, ...], seed: int) -> None:
        with self._lock:
            self._random = (
                RandomFaults(fraction, faults, random.Random(seed)) if fraction > 0 else None
            )

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self._random = None

    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    def take(self, method: str, path: str) -> Any | None:
        """The fault for this request, if any (a scripted one is used up)."""
        with self._lock:
            for index, entry in enumerate(self._script):
                if entry.matches(method, path):
                    del self._script[index]
                    return entry.fault
            chance = self._random
            if chance is not None and chance.rng.random() < chance.fraction:
                return chance.rng.choice(chance.faults)
            return None

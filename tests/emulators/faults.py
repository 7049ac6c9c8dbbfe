"""Fault scheduling shared by the API emulators: scripted faults and random ones."""

from __future__ import annotations

import random
import re
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

"""The forge write budget, shared by every replica (``bot.forge.retry.WriteBudget``).

GitHub allows about 80 content-creating requests a minute per token, and tells
a client that went too fast to wait (``Retry-After``, ``X-RateLimit-Reset``).
Each write takes a slot in ``write_slots`` and, once it finished, its slot counts
from then (so no window the server measures holds more); a pause in ``write_pauses`` stops
every replica writing with that token until it ends. A transaction-scoped lock
per budget key makes the count-then-take atomic across replicas.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from bot.server.storage.base import Database


def budget_key(forge: str, api_url: str, credential: str) -> str:
    """The budget's key for one token: a hash, so no token is ever stored."""
    digest = hashlib.sha256(f"{forge}\n{api_url}\n{credential}".encode()).hexdigest()
    return f"{forge}:{digest[:16]}"


class SharedWriteBudget:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def take(self, key: str, limit: int, window_s: float, slot: str) -> float:
        now = self._clock()
        with self._db.transaction() as tx:
            tx.lock(f"sluice:write-budget:{key}")
            pause = tx.one("SELECT until_at FROM write_pauses WHERE budget_key = ?", (key,))
            if pause is not None and pause["until_at"] > now:
                return float(pause["until_at"]) - now
            tx.execute(
                "DELETE FROM write_slots WHERE budget_key = ? AND at <= ?", (key, now - window_s)
            )
            row = tx.one(
                "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM write_slots WHERE budget_key = ?",
                (key,),
            )
            assert row is not None
            if int(row["n"]) < limit:
                tx.execute(
                    "INSERT INTO write_slots (budget_key, slot, at) VALUES (?, ?, ?)",
                    (key, slot, now),
                )
                return 0.0
            return max(0.001, float(row["oldest"]) + window_s - now)

    def settle(self, key: str, slot: str) -> None:
        with self._db.transaction() as tx:
            tx.execute(
                "UPDATE write_slots SET at = ? WHERE budget_key = ? AND slot = ?",
                (self._clock(), key, slot),
            )

    def pause(self, key: str, seconds: float) -> None:
        until = self._clock() + seconds
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO write_pauses (budget_key, until_at) VALUES (?, ?) "
                "ON CONFLICT (budget_key) DO UPDATE SET until_at = "
                "CASE WHEN write_pauses.until_at > excluded.until_at "
                "THEN write_pauses.until_at ELSE excluded.until_at END",
                (key, until),
            )

    def used(self, key: str, window_s: float) -> int:
        """Writes taken in the last ``window_s`` seconds (for tests and metrics)."""
        with self._db.read() as tx:
            row = tx.one(
                "SELECT COUNT(*) AS n FROM write_slots WHERE budget_key = ? AND at > ?",
                (key, self._clock() - window_s),
            )
        return int(row["n"]) if row else 0

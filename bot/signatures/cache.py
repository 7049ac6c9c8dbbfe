"""Verdicts kept by (trust set, commit SHA): in memory, and on disk when given a directory.

A commit object never changes, so its verdict only changes with the trust set
(part of the key) or when a key or signature expires (``valid_until``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from bot.models import CommitCheck
from bot.signatures.result import Checked

_FILE = "signatures.sqlite3"
_CHUNK = 500
_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    trust_id TEXT NOT NULL,
    sha TEXT NOT NULL,
    status TEXT NOT NULL,
    method TEXT NOT NULL,
    signer TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    detail TEXT NOT NULL,
    valid_until REAL,
    PRIMARY KEY (trust_id, sha)
)
"""


class VerdictCache:
    """Cached :class:`Checked` values for one trust set; safe to share between threads."""

    def __init__(self, trust_id: str, directory: Path | None = None) -> None:
        self.trust_id = trust_id
        self._lock = threading.Lock()
        self._memory: dict[str, Checked] = {}
        self._db: sqlite3.Connection | None = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                directory / _FILE, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)

    def get_many(self, shas: list[str]) -> dict[str, CommitCheck]:
        """The still-current cached verdicts among ``shas``."""
        with self._lock:
            return self._get_many(shas)

    def _get_many(self, shas: list[str]) -> dict[str, CommitCheck]:
        now = time.time()
        found = {s: c for s in shas if (c := self._memory.get(s)) and _current(c, now)}
        missing = [s for s in dict.fromkeys(shas) if s not in found]
        if self._db is not None:
            for start in range(0, len(missing), _CHUNK):
                chunk = missing[start : start + _CHUNK]
                rows = self._db.execute(
                    "SELECT sha, status, method, signer, fingerprint, detail, valid_until "
                    f"FROM verdicts WHERE trust_id = ? AND sha IN ({','.join('?' * len(chunk))})",
                    [self.trust_id, *chunk],
                )
                for sha, status, method, signer, fingerprint, detail, until in rows:
                    checked = Checked(
                        CommitCheck(sha, status, method, signer, fingerprint, detail), until
                    )
                    if _current(checked, now):
                        self._memory[sha] = found[sha] = checked
        return {sha: checked.check for sha, checked in found.items()}

    def put_many(self, results: list[Checked]) -> None:
        with self._lock:
            self._put_many(results)

    def _put_many(self, results: list[Checked]) -> None:
        now = time.time()
        fresh = [c for c in results if _current(c, now)]
        for checked in fresh:
            self._memory[checked.check.sha] = checked
        if self._db is not None and fresh:
            rows = [
                (self.trust_id, c.sha, c.status, c.method, c.signer, c.fingerprint, c.detail, until)
                for c, until in ((r.check, r.valid_until) for r in fresh)
            ]
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
                )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _current(checked: Checked, now: float) -> bool:
    return checked.valid_until is None or checked.valid_until > now

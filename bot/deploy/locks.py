"""One deploy per app at a time, across every replica, fenced.

A deploy lock is a lease in the bot's database (``deploy_locks``): a holder, an
expiry and a fencing token that grows by one each time the lock changes hands.
While a deploy holds it, a thread renews the lease. Right before the ledger push
the writer checks that its token still holds the lock with time to spare: a
replica that stalled past its lease (and so may have lost the lock to another)
refuses to push and the job is retried, instead of pushing a ledger commit
another deploy no longer expects.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bot.deploy.sql import SqlDatabase
from bot.errors import RetryableError

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0
#: A push needs at least this much lease left; less, and the lock may lapse mid-push.
PUSH_MARGIN_S = 10.0


class LockLost(RetryableError):
    """This deploy no longer holds its app's lock: it must not write the ledger."""


@dataclass(frozen=True)
class Lease:
    key: str
    holder: str
    token: int


class LockStore:
    """The ``deploy_locks`` table: acquire, renew, check and release leases."""

    def __init__(self, db: SqlDatabase, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def acquire(self, key: str, holder: str, lease_s: float) -> Lease | None:
        now = self._clock()
        with self._db.transaction() as tx:
            tx.lock(f"sluice:deploy-lock:{key}")  # two first-ever acquirers: one inserts
            row = tx.one(
                "SELECT holder, token, expires_at FROM deploy_locks WHERE lock_key = ?"
                + self._db.for_update,
                (key,),
            )
            if row is None:
                tx.execute(
                    "INSERT INTO deploy_locks (lock_key, holder, token, expires_at) "
                    "VALUES (?, ?, 1, ?)",
                    (key, holder, now + lease_s),
                )
                return Lease(key, holder, 1)
            if row["holder"] is not None and row["expires_at"] >= now:
                return None
            token = int(row["token"]) + 1
            tx.execute(
                "UPDATE deploy_locks SET holder = ?, token = ?, expires_at = ? WHERE lock_key = ?",
                (holder, token, now + lease_s, key),
            )
        return Lease(key, holder, token)

    def renew(self, lease: Lease, lease_s: float) -> bool:
        now = self._clock()
        with self._db.transaction() as tx:
            return (
                tx.execute(
                    "UPDATE deploy_locks SET expires_at = ? WHERE lock_key = ? AND holder = ? "
                    "AND token = ? AND expires_at >= ?",
                    (now + lease_s, lease.key, lease.holder, lease.token, now),
                ).rowcount
                == 1
            )

    def holds(self, lease: Lease, margin_s: float = 0.0) -> bool:
        """Whether ``lease`` still holds its lock for at least ``margin_s`` more seconds."""
        with self._db.read() as tx:
            row = tx.one(
                "SELECT 1 FROM deploy_locks WHERE lock_key = ? AND holder = ? AND token = ? "
                "AND expires_at >= ?",
                (lease.key, lease.holder, lease.token, self._clock() + margin_s),
            )
        return row is not None

    def release(self, lease: Lease) -> None:
        with self._db.transaction() as tx:
            tx.execute(
                "UPDATE deploy_locks SET holder = NULL, expires_at = 0 "
                "WHERE lock_key = ? AND holder = ? AND token = ?",
                (lease.key, lease.holder, lease.token),
            )


@dataclass
class DeployLocks:
    """``hold(repo, apps)`` blocks until this deploy holds every app's lock (sorted order)."""

    store: LockStore
    lease_s: float = DEFAULT_LEASE_S
    poll_s: float = 0.2
    _held: threading.local = field(default_factory=threading.local, init=False, repr=False)

    @contextmanager
    def hold(self, repo: str, apps: list[str]) -> Iterator[list[Lease]]:
        holder = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        leases: list[Lease] = []
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew, args=(leases, stop), name="sluice-deploy-lock", daemon=True
        )
        renewer.start()  # renews what is held so far while later apps are awaited
        try:
            for app in sorted(set(apps)):  # sorted: two holders never wait on each other
                leases.append(self._acquire(f"{repo}/{app}", holder))
            previous = getattr(self._held, "leases", [])
            self._held.leases = [*previous, *leases]
            try:
                yield leases
            finally:
                self._held.leases = previous
        finally:
            stop.set()
            renewer.join(5)
            for lease in leases:
                self.store.release(lease)

    def check(self, repo: str, apps: list[str]) -> None:
        """Raise ``LockLost`` unless this thread holds every app's lock, with time to spare."""
        held = {lease.key: lease for lease in getattr(self._held, "leases", [])}
        for app in sorted(set(apps)):
            lease = held.get(f"{repo}/{app}")
            margin = min(PUSH_MARGIN_S, self.lease_s / 3)
            if lease is None or not self.store.holds(lease, margin):
                raise LockLost(f"lost the deploy lock of {app}; another replica may deploy it")

    def _acquire(self, key: str, holder: str) -> Lease:
        while True:
            lease = self.store.acquire(key, holder, self.lease_s)
            if lease is not None:
                return lease
            time.sleep(self.poll_s)

    def _renew(self, leases: list[Lease], stop: threading.Event) -> None:
        while not stop.wait(self.lease_s / 3):
            for lease in list(leases):
                if not self.store.renew(lease, self.lease_s):
                    log.error("deploy lock %s lost (token %s)", lease.key, lease.token)

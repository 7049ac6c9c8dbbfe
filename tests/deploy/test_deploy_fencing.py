"""The per-app deploy lock is fenced: a deploy that lost its lock (it stalled past its
lease and another replica took the lock) pushes no ledger commit; its retry deploys once.

Real git, gpg and ledger signing on the SQLite backend of the storage seam; the stall is
a clock that jumps while the ledger commit is being made, just before the push.
"""

from __future__ import annotations

import pytest

from bot.deploy.ledger import Ledger
from bot.deploy.locks import DeployLocks, LockLost, LockStore
from tests.deploy.test_promote import (  # noqa: F401  (fixtures)
    REPO,
    keys,
    puller_double,
    web,
)
from tests.deploy.test_promote import world as world  # noqa: F401,F811  (a fixture)


def test_a_deploy_that_lost_its_app_lock_before_the_push_pushes_nothing(world, monkeypatch):
    now = [1_000.0]
    database = world.promoter.pins._db
    world.promoter.locks = DeployLocks(LockStore(database, lambda: now[0]), lease_s=30)
    rival = LockStore(database, lambda: now[0])  # another replica
    world.gitops.branch("scale", "main", web(3))
    world.pull(1, "scale")
    world.approve(1, "bob")
    merge = world.merge(1)
    taken = []
    record = Ledger.record

    def stall_then_record(self, *args, **kwargs):
        now[0] += 31  # this replica stalls past its lease while it signs...
        taken.append(rival.acquire(f"github:{REPO}/web", "replica-b", 30))  # ...and loses it
        return record(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "record", stall_then_record)
    with pytest.raises(LockLost, match="web"):
        world.merged(1)
    assert taken[0] is not None and taken[0].token == 2
    assert world.gitops.ledger().tip() is None  # the remote ledger never moved

    monkeypatch.undo()
    rival.release(taken[0])
    world.merged(1)  # the job's retry
    history = world.gitops.ledger().history("web")
    assert [entry.revision for _, entry in history] == [merge]

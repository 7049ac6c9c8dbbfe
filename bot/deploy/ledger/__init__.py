"""The ledger: approved deploy state kept in Git on a branch the bot signs.

Every commit on the ledger branch (default ``sluice/ledger``) is made and signed
by the bot and writes ``apps/<app>.yaml`` for one or more apps::

    app: web-prod
    revision: <sha the puller may deploy>
    previous: <sha the ledger named before, or null>
    action: deploy | rollback | preview-deploy
    pr: 42
    pr_url: https://github.com/org/repo/pull/42
    approved_by: [alice]
    gates: {signatures: pass, policy: pass, render: pass}
    at: "2026-01-31T12:00:00Z"
    actor: sluice

Commits are built with plumbing only (a temporary index, ``commit-tree``,
``update-ref`` with the old value), so no working tree is touched and two
writers racing for the branch both land: the loser re-reads the tip and
retries. ``git log sluice/ledger`` is the deploy audit log.

The puller trusts nothing the bot says over HTTP; it calls :func:`verify_tip`
and :meth:`VerifiedLedger.approved_revision`, which insist on a bot signature
over the commit that wrote the entry and on the revision being reachable from
the tracked branch.
"""

from bot.config.signing import DEFAULT_LEDGER_BRANCH as DEFAULT_BRANCH
from bot.config.signing import SigningConfig
from bot.deploy.ledger.branch import BotSigner, Ledger
from bot.deploy.ledger.entry import ACTIONS, APPS_DIR, Action, LedgerEntry, utc_now
from bot.deploy.ledger.verify import VerifiedLedger, verify_tip
from bot.errors import LedgerError

__all__ = [
    "ACTIONS",
    "APPS_DIR",
    "DEFAULT_BRANCH",
    "Action",
    "BotSigner",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "SigningConfig",
    "VerifiedLedger",
    "utc_now",
    "verify_tip",
]

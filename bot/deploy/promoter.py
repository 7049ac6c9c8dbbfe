"""``Promoter``: the deploy side's one entry point, handing each job or command to its part.

The parts, by what each decides: ``gates`` (merge-time gates and approvals),
``ledger_writer`` (writing the ledger), ``follow`` (waking and following the
puller, reporting on the PR), ``merge`` (promotion of a merged PR, re-queueing
stale previews), ``sync`` (``/sync``), ``rollback`` (``/rollback``, revert PRs
and pins) and ``events`` (puller events). They share one ``DeployDesk``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config.server import ServerConfig
from bot.deploy.desk import DeployDesk
from bot.deploy.events import PullerEvents
from bot.deploy.ledger import BotSigner
from bot.deploy.locks import DeployLocks, LockStore
from bot.deploy.merge import MergePromotion
from bot.deploy.overrides import OverrideStore
from bot.deploy.pins import DeployLog, PinStore
from bot.deploy.puller_client import PullerClient
from bot.deploy.rollback import Rollback
from bot.deploy.sql import SqlDatabase
from bot.deploy.sync import Sync
from bot.forge.base import Forge, PullRequest, RepoRef
from bot.gitops import Mirrors


@dataclass
class Promoter(DeployDesk):
    """Merge-to-deploy for every repository the bot serves (forge-agnostic)."""

    @classmethod
    def from_config(
        cls,
        config: ServerConfig,
        *,
        mirrors: Mirrors,
        database: SqlDatabase,
        overrides: OverrideStore,
        cache_dir: Path,
        requeue_preview: Callable[[Forge, PullRequest], None] | None = None,
    ) -> Promoter | None:
        """The promoter ``sluice serve`` runs; None when deploys are off (no signing key)."""
        if config.signing is None:
            return None
        puller = None
        if config.puller_url and config.puller_token:
            puller = PullerClient(config.puller_url, config.puller_token)
        return cls(
            config=config,
            mirrors=mirrors,
            overrides=overrides,
            pins=PinStore(database),
            deploy_log=DeployLog(database),
            locks=DeployLocks(LockStore(database)),
            signer=BotSigner(config.signing),
            cache_dir=cache_dir,
            puller=puller,
            requeue_preview=requeue_preview,
        )

    def on_merged(self, forge: Forge, pr: PullRequest) -> None:
        """Promote a merged PR (idempotent: a re-run records nothing twice)."""
        MergePromotion(self).on_merged(forge, pr)

    def on_push(self, forge: Forge, repo: RepoRef, branch: str, sha: str) -> str:
        """A direct push to ``branch``: never deployed; the reply says why."""
        return MergePromotion(self).on_push(forge, repo, branch, sha)

    def sync(self, forge: Forge, pr: PullRequest, actor: str, apps: tuple[str, ...] = ()) -> str:
        """``/sync [app…]``: the reply text."""
        return Sync(self).sync(forge, pr, actor, apps)

    def rollback(
        self,
        forge: Forge,
        pr: PullRequest,
        actor: str,
        apps: tuple[str, ...] = (),
        to_rev: str | None = None,
    ) -> str:
        """``/rollback [app…] [--to REV]`` on a merged PR: the reply text."""
        return Rollback(self).rollback(forge, pr, actor, apps, to_rev)

    def on_puller_event(
        self, forge_lookup: Callable[[str], Forge], event: Mapping[str, Any]
    ) -> None:
        """A ``puller-event`` job: report a deploy result or drift on the PR that deployed."""
        PullerEvents(self).on_puller_event(forge_lookup, event)

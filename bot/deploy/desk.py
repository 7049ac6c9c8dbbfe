"""The deploy side's shared desk: its stores, clients and settings, and the plumbing each decision uses."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bot.config.server import RepoSettings, ServerConfig
from bot.deploy.ledger import BotSigner
from bot.deploy.locks import DeployLocks
from bot.deploy.overrides import OverrideStore
from bot.deploy.pins import DeployLog, PinStore
from bot.deploy.puller_client import PullerClient
from bot.errors import RetryableError
from bot.forge.base import Forge, PullRequest, RepoRef, StatusState
from bot.gitops import Git, GitError, Mirrors
from bot.report.escape import code, truncate

DEPLOY_CONTEXT = "sluice/deploy/{app}"
DEFAULT_FOLLOW_TIMEOUT_S = 300.0
DEFAULT_POLL_S = 2.0
_STATUS_LIMIT = 140


def deploy_context(app: str) -> str:
    return DEPLOY_CONTEXT.format(app=app)


def names(apps: list[str] | tuple[str, ...]) -> str:
    return ", ".join(code(a) for a in apps)


class AppLocks:
    """One lock per (repo, app) in this process (one node, and tests); ``sluice serve`` uses
    ``bot.deploy.locks.DeployLocks``, which holds across replicas."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    @contextmanager
    def hold(self, repo: str, apps: list[str]) -> Iterator[None]:
        with self._guard:
            locks = [self._locks.setdefault((repo, a), threading.Lock()) for a in sorted(set(apps))]
        taken: list[threading.Lock] = []
        try:
            for lock in locks:  # sorted order: two holders never wait on each other
                lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()

    def check(self, repo: str, apps: list[str]) -> None:
        """In-process locks cannot be lost; ``bot.deploy.locks.DeployLocks`` can."""
        del repo, apps


@dataclass
class DeployDesk:
    """What every deploy decision shares: config, stores, the signer, the puller client."""

    config: ServerConfig
    mirrors: Mirrors
    overrides: OverrideStore
    pins: PinStore
    deploy_log: DeployLog
    signer: BotSigner
    cache_dir: Path
    puller: PullerClient | None = None
    #: Called for each open PR whose preview went stale because a deploy moved its base.
    requeue_preview: Callable[[Forge, PullRequest], None] | None = None
    follow_timeout_s: float = DEFAULT_FOLLOW_TIMEOUT_S
    poll_s: float = DEFAULT_POLL_S
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    locks: AppLocks | DeployLocks = field(default_factory=AppLocks)

    def settings(self, repo: RepoRef) -> RepoSettings:
        return self.config.repo_settings(repo.forge, repo.full_name)

    def bot_login(self, forge: Forge) -> str:
        return self.config.bot_login or forge.bot_login()

    def mirror(
        self,
        forge: Forge,
        repo: RepoRef,
        settings: RepoSettings,
        shas: list[str],
        head_url: str | None = None,
    ) -> Git:
        """The repo's mirror holding the tracked branch and ``shas`` (from a fork if need be)."""
        auth = forge.clone_auth(repo)
        key = f"{forge.name}-{repo.full_name}"
        wants = [f"refs/heads/{settings.tracked_branch}", *shas]
        try:
            git = self.mirrors.fetch(key, repo.clone_url, wants, auth=auth)
            missing = [
                s for s in shas if git.run("cat-file", "-t", s, check=False).strip() != b"commit"
            ]
            if missing and head_url and head_url != repo.clone_url:
                git = self.mirrors.fetch(key, head_url, missing, auth=auth)
        except GitError as exc:
            raise RetryableError(str(exc)) from None
        return git

    def status(
        self, forge: Forge, repo: RepoRef, sha: str, app: str, state: StatusState, text_: str
    ) -> None:
        """Set the ``sluice/deploy/<app>`` status on ``sha``."""
        forge.set_status(repo, sha, deploy_context(app), state, truncate(text_, _STATUS_LIMIT))

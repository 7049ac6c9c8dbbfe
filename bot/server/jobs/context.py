"""What every job handler shares: the server config, the forges, mirrors, stores and clients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bot.config.server import ServerConfig
from bot.deploy import OverrideStore, Promoter, PullerClient
from bot.errors import RetryableError
from bot.forge.base import Forge, RepoRef
from bot.gitops import Git, GitError, Mirrors
from bot.server.reports import ReportPages, open_pages


@dataclass
class JobContext:
    """The handlers' shared dependencies: ``BotHandlers`` is one, and each job kind holds it."""

    config: ServerConfig
    forges: Mapping[str, Forge]
    mirrors: Mirrors
    overrides: OverrideStore
    cache_dir: Path
    # Merge-to-deploy; None when no bot signing key is configured (deploys are off).
    promoter: Promoter | None = None
    # The puller's API for the "Live cluster" preview section when there is no promoter
    # to share its client; neither: previews carry no live section.
    puller: PullerClient | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Full report pages in the shared database (several replicas); None: a file in the
    # data directory.
    pages: ReportPages | None = None

    def report_pages(self) -> ReportPages:
        return self.pages or open_pages(self.config.data_dir)

    def forge(self, name: str) -> Forge:
        try:
            return self.forges[name]
        except KeyError:
            raise ValueError(f"forge {name!r} is not configured") from None

    def bot_login(self, forge: Forge) -> str:
        return self.config.bot_login or forge.bot_login()

    def fetch_commits(self, forge: Forge, repo: RepoRef, shas: list[str]) -> Git:
        """The repo's mirror holding ``shas``; a git failure is worth a retry."""
        try:
            return self.mirrors.fetch(
                f"{forge.name}-{repo.full_name}", repo.clone_url, shas, auth=forge.clone_auth(repo)
            )
        except GitError as exc:
            raise RetryableError(str(exc)) from None

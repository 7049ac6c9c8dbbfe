"""Several ``sluice serve`` replicas on one PostgreSQL database, as real processes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tests.botkit import SluiceServer, server_env

#: A fixed test key (64 hex digits): every replica must fingerprint Secrets alike.
FINGERPRINT_KEY = "5e" * 32


class Replica(SluiceServer):
    """``sluice serve --role ROLE`` with its own data directory (no shared disk)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        role: str = "all",
        config: Path | None = None,
    ) -> None:
        super().__init__(env, log_path, config)
        self.role = role

    def start(self, timeout: float = 60) -> Replica:
        args = ["serve", "--bind", f"127.0.0.1:{self.port}", "--role", self.role]
        if self.config is not None:
            args += ["--config", str(self.config)]
        self._launch(args, timeout, 0.1)
        return self


def replica_env(
    root: Path, name: str, database_url: str, *, github_url: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of replica ``name``: its own data dir, the shared database and key."""
    return server_env(
        root / name / "data",
        github_url=github_url,
        SLUICE_DATABASE_URL=database_url,
        SLUICE_FINGERPRINT_KEY=FINGERPRINT_KEY,
        SLUICE_REPLICA_ID=name,
        **extra,
    )

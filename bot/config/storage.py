"""Where ``sluice serve`` keeps its state, and what every replica must share.

SQLite under ``SLUICE_DATA_DIR`` is the default and needs nothing else. With
``SLUICE_DATABASE_URL=postgresql://…`` several replicas share one PostgreSQL
database; then installation-wide state must come from configuration, not from
one pod's disk: above all the Secret fingerprint key, or two replicas would
fingerprint one Secret differently and reviewers would see false "changed" keys.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bot.config.repo import ConfigError

KEY_BYTES = 32
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class StorageSettings:
    #: PostgreSQL; None: the SQLite file under the data directory (one node).
    database_url: str | None = field(default=None, repr=False)
    #: The Secret fingerprint key from configuration; None: generated per data directory.
    fingerprint_key: bytes | None = field(default=None, repr=False)
    #: This replica's name in metrics and worker ids (the pod name in Kubernetes).
    replica_id: str = "local"
    #: Forge content writes allowed per token in any ``write_window_s`` (all replicas together).
    write_limit: int = 80
    write_window_s: float = 60.0

    @property
    def replicated(self) -> bool:
        return self.database_url is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StorageSettings:
        env = {k: v.strip() for k, v in environ.items() if v.strip()}
        url = env.get("SLUICE_DATABASE_URL") or None
        if url is not None and urlsplit(url).scheme not in ("postgresql", "postgres"):
            raise ConfigError(
                "SLUICE_DATABASE_URL must be a postgresql:// URL "
                f"(got a {urlsplit(url).scheme or 'scheme-less'} URL); "
                "leave it unset to use SQLite under SLUICE_DATA_DIR"
            )
        key = _fingerprint_key(env)
        if url is not None and key is None:
            raise ConfigError(
                "SLUICE_DATABASE_URL is set but no fingerprint key is: set SLUICE_FINGERPRINT_KEY "
                "(64 hex digits) or SLUICE_FINGERPRINT_KEY_FILE (a mounted Secret), the same on "
                "every replica, so that all of them fingerprint Secret values alike"
            )
        replica = env.get("SLUICE_REPLICA_ID") or env.get("HOSTNAME") or os.uname().nodename
        limit, window = _write_budget(env.get("SLUICE_FORGE_WRITE_BUDGET", "80/60"))
        return cls(
            database_url=url,
            fingerprint_key=key,
            replica_id=replica,
            write_limit=limit,
            write_window_s=window,
        )


def _write_budget(text: str) -> tuple[int, float]:
    """``LIMIT/SECONDS``, e.g. ``80/60``: GitHub's documented content-write limit."""
    limit, _, window = text.partition("/")
    try:
        parsed = int(limit), float(window)
    except ValueError:
        parsed = (0, 0.0)
    if parsed[0] < 1 or parsed[1] <= 0:
        raise ConfigError(
            f"SLUICE_FORGE_WRITE_BUDGET must be LIMIT/SECONDS such as 80/60, got {text[:40]!r}"
        )
    return parsed


def _fingerprint_key(env: Mapping[str, str]) -> bytes | None:
    value = env.get("SLUICE_FINGERPRINT_KEY")
    path = env.get("SLUICE_FINGERPRINT_KEY_FILE")
    if value and path:
        raise ConfigError("set SLUICE_FINGERPRINT_KEY or SLUICE_FINGERPRINT_KEY_FILE, not both")
    if path:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"SLUICE_FINGERPRINT_KEY_FILE {path}: cannot read it ({exc.strerror})"
            ) from None
        if len(raw) == KEY_BYTES:
            return raw
        return _parse_hex(raw.decode("ascii", errors="replace").strip(), f"the file {path}")
    if value:
        return _parse_hex(value.strip(), "SLUICE_FINGERPRINT_KEY")
    return None


def _parse_hex(text: str, where: str) -> bytes:
    if not _HEX_KEY.match(text):
        # The value itself is never echoed: it is a secret.
        raise ConfigError(
            f"{where} must hold a {KEY_BYTES}-byte key as 64 hex digits "
            f"(got {len(text)} characters); make one with: openssl rand -hex 32"
        )
    return bytes.fromhex(text)

"""The bot's ledger settings: the ledger's default branch and how the bot signs its commits."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from bot.errors import LedgerError

DEFAULT_LEDGER_BRANCH = "sluice/ledger"
SigningMethod = Literal["gpg", "ssh"]
SIGNING_METHODS: tuple[str, ...] = get_args(SigningMethod)

_FINGERPRINT = re.compile(r"^(?:[0-9A-F]{40}|[0-9A-F]{64})$")


@dataclass(frozen=True)
class SigningConfig:
    """How the bot signs ledger commits.

    ``gpg``: ``key`` is the OpenPGP key fingerprint in ``gnupg_home`` (the secret
    key must be there and unprotected, or an agent must hold its passphrase).
    ``ssh``: ``key`` is the path to an SSH private key file.
    """

    method: SigningMethod
    key: str = field(repr=False)
    gnupg_home: Path | None = None
    name: str = "Sluice"
    email: str = "sluice@localhost"

    def __post_init__(self) -> None:
        if self.method not in SIGNING_METHODS:
            raise LedgerError(
                f"signing method {self.method!r} is not one of {', '.join(SIGNING_METHODS)}"
            )
        if self.method == "gpg":
            if not _FINGERPRINT.match(self.key.upper().replace(" ", "")):
                raise LedgerError("gpg signing key: must be a full key fingerprint")
            if self.gnupg_home is None:
                raise LedgerError("gpg signing needs gnupg_home (the bot's GNUPGHOME)")
        elif not self.key:
            raise LedgerError("ssh signing key: path to the private key file is empty")
        if not self.name.strip() or "<" in self.name or "@" not in self.email:
            raise LedgerError("ledger committer identity: needs a name and an e-mail address")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SigningConfig | None:
        """``SLUICE_SIGNING_METHOD`` / ``_KEY`` / ``SLUICE_GNUPGHOME``; None when unset."""
        method = environ.get("SLUICE_SIGNING_METHOD", "").strip()
        if not method:
            return None
        key = environ.get("SLUICE_SIGNING_KEY", "").strip()
        if not key:
            raise LedgerError("SLUICE_SIGNING_METHOD is set but SLUICE_SIGNING_KEY is not")
        home = environ.get("SLUICE_GNUPGHOME") or environ.get("GNUPGHOME")
        return cls(
            method=method,  # type: ignore[arg-type]
            key=key,
            gnupg_home=Path(home) if home else None,
            name=environ.get("SLUICE_SIGNING_NAME", "Sluice"),
            email=environ.get("SLUICE_SIGNING_EMAIL", "sluice@localhost"),
        )

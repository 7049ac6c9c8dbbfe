"""Commit signature verification (OpenPGP through gpg, SSH through ssh-keygen).

Trusted keys come only from the directory the server config names, never from
the repository being checked.
"""

from __future__ import annotations

from bot.signatures.commit import SignedCommit, read_commits, split_signed_commit
from bot.signatures.keys import TrustedKeys, TrustedKeysError
from bot.signatures.openpgp import SignatureToolError
from bot.signatures.verifier import MODES, SignatureVerifier

__all__ = [
    "MODES",
    "SignatureToolError",
    "SignatureVerifier",
    "SignedCommit",
    "TrustedKeys",
    "TrustedKeysError",
    "read_commits",
    "split_signed_commit",
]

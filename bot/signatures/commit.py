"""Raw commit objects and the split of their signature from the signed payload.

The split follows git's own ``parse_buffer_signed_by_header`` byte for byte:
the signature header of the repository's hash algorithm (``gpgsig`` for SHA-1,
``gpgsig-sha256`` for SHA-256) and every other ``gpgsig*`` header, with their
continuation lines, are removed from the payload; everything after the first
blank line is payload untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.gitops import Git, GitError

SignatureFormat = Literal["openpgp", "ssh", "x509", "unknown"]

_ARMOR_FORMATS: tuple[tuple[bytes, SignatureFormat], ...] = (
    (b"-----BEGIN PGP SIGNATURE-----", "openpgp"),
    (b"-----BEGIN PGP MESSAGE-----", "openpgp"),
    (b"-----BEGIN SSH SIGNATURE-----", "ssh"),
    (b"-----BEGIN SIGNED MESSAGE-----", "x509"),
)


@dataclass(frozen=True)
class SignedCommit:
    """A commit split into what was signed and the signature (empty when unsigned)."""

    sha: str
    payload: bytes
    signature: bytes

    @property
    def is_signed(self) -> bool:
        return bool(self.signature)

    @property
    def format(self) -> SignatureFormat:
        for prefix, kind in _ARMOR_FORMATS:
            if self.signature.startswith(prefix):
                return kind
        return "unknown"

    @property
    def committer_time(self) -> int | None:
        for line in self.payload.split(b"\n"):
            if not line:
                break
            if line.startswith(b"committer "):
                try:
                    return int(line.rsplit(b" ", 2)[-2])
                except (IndexError, ValueError):
                    return None
        return None


def signature_header(sha: str) -> bytes:
    """The header git reads the signature from, by the repository's hash length."""
    return b"gpgsig-sha256" if len(sha) == 64 else b"gpgsig"


def split_signed_commit(sha: str, raw: bytes) -> SignedCommit:
    """Split a raw commit object (``git cat-file commit``) into payload and signature."""
    header = signature_header(sha)
    payload = bytearray()
    signature = bytearray()
    in_signature = other_signature = False
    pos, end = 0, len(raw)
    while pos < end:
        newline = raw.find(b"\n", pos)
        nxt = end if newline < 0 else newline + 1
        line = raw[pos:nxt]
        sig_start = -1
        if in_signature and line.startswith(b" "):
            sig_start = 1
        elif line.startswith(header + b" "):
            sig_start = len(header) + 1
            other_signature = False
        elif line.startswith(b"gpgsig"):
            other_signature = True
        elif other_signature and not line.startswith(b" "):
            other_signature = False
        if sig_start >= 0:
            signature += line[sig_start:]
            in_signature = True
        else:
            if line.startswith(b"\n"):
                # The header section ends here: the rest is payload as it is.
                nxt = end
                line = raw[pos:end]
            if not other_signature:
                payload += line
            in_signature = False
        pos = nxt
    return SignedCommit(sha=sha, payload=bytes(payload), signature=bytes(signature))


def read_commits(git: Git, shas: list[str]) -> dict[str, bytes]:
    """Raw commit objects for ``shas``, read through one ``git cat-file --batch``."""
    if not shas:
        return {}
    out = git.run("cat-file", "--batch", input=("\n".join(shas) + "\n").encode())
    commits: dict[str, bytes] = {}
    pos = 0
    while pos < len(out):
        newline = out.index(b"\n", pos)
        fields = out[pos:newline].decode(errors="replace").split()
        if len(fields) != 3:
            raise GitError(f"cannot read commit {fields[0] if fields else '?'}: not found")
        oid, kind, size = fields[0], fields[1], int(fields[2])
        if kind != "commit":
            raise GitError(f"{oid} is a {kind}, not a commit")
        start = newline + 1
        commits[oid] = out[start : start + size]
        pos = start + size + 1
    return commits

"""The trusted signing keys: OpenPGP ``*.asc`` files and an SSH ``allowed_signers`` file.

Keys come only from a directory the operator names (server config); a PR can
never add one. The set is immutable once loaded and has a stable ``trust_id``
so that cached verdicts are only ever reused for the very same trust set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gnupg

ALLOWED_SIGNERS = "allowed_signers"
# Bump when the verification logic changes, so old cached verdicts are not reused.
_TRUST_ID_VERSION = b"sluice-signatures/1\0"
_PRIVATE_ARMOR = "-----BEGIN PGP PRIVATE KEY BLOCK-----"
_PUBLIC_ARMOR = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


class TrustedKeysError(KeyError):
    """A trusted-key file is unreadable or malformed; the message names the file."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class OpenPGPKeyFile:
    """One ``*.asc`` file: its armored public keys and their primary fingerprints."""

    name: str
    armored: str
    fingerprints: tuple[str, ...]


@dataclass(frozen=True)
class TrustedKeys:
    """An immutable set of trusted keys read from one directory."""

    directory: Path | None = None
    openpgp: tuple[OpenPGPKeyFile, ...] = ()
    allowed_signers: str = ""
    notes: tuple[str, ...] = ()

    @classmethod
    def empty(cls, note: str = "no trusted keys configured") -> TrustedKeys:
        """A set that trusts nobody: every signed commit is reported untrusted."""
        return cls(notes=(f"{note}: every signed commit is reported untrusted",))

    @classmethod
    def load(cls, directory: Path) -> TrustedKeys:
        """Read ``*.asc`` OpenPGP public keys and ``allowed_signers`` from ``directory``.

        A missing directory or one without keys yields a set that trusts nobody
        (fail closed). A malformed file raises :class:`TrustedKeysError`.
        """
        directory = Path(directory)
        if not directory.is_dir():
            return cls.empty(f"trusted keys directory {directory} does not exist")
        key_files = tuple(
            _load_openpgp_file(path) for path in sorted(directory.glob("*.asc")) if path.is_file()
        )
        signers_path = directory / ALLOWED_SIGNERS
        allowed = _load_allowed_signers(signers_path) if signers_path.is_file() else ""
        keys = cls(directory=directory, openpgp=key_files, allowed_signers=allowed)
        if keys.is_empty:
            return cls.empty(f"no *.asc keys or {ALLOWED_SIGNERS} in {directory}")
        return keys

    @property
    def is_empty(self) -> bool:
        return not self.openpgp and not self.allowed_signers.strip()

    @property
    def openpgp_fingerprints(self) -> frozenset[str]:
        return frozenset(fpr for f in self.openpgp for fpr in f.fingerprints)

    @property
    def trust_id(self) -> str:
        """A digest of the key material (not of file names or the directory)."""
        digest = hashlib.sha256(_TRUST_ID_VERSION)
        for armored in sorted(f.armored for f in self.openpgp):
            digest.update(b"pgp\0" + armored.encode() + b"\0")
        digest.update(b"ssh\0" + self.allowed_signers.encode())
        return digest.hexdigest()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustedKeysError(f"cannot read trusted key file {path}: {exc}") from None


def _load_openpgp_file(path: Path) -> OpenPGPKeyFile:
    text = _read_text(path)
    # Never echo the content: a private key put here by mistake must not reach a log.
    if _PRIVATE_ARMOR in text:
        raise TrustedKeysError(
            f"trusted key file {path} contains a PRIVATE key; only public keys belong there"
        )
    if _PUBLIC_ARMOR not in text:
        raise TrustedKeysError(
            f"trusted key file {path} is not an ASCII-armored OpenPGP public key block"
        )
    with tempfile.TemporaryDirectory(prefix="sluice-keyscan-") as home:
        scanned = gnupg.GPG(gnupghome=home, options=["--no-autostart"]).scan_keys_mem(text)
    fingerprints = tuple(k["fingerprint"] for k in scanned if k.get("type") == "pub")
    if scanned.returncode != 0 or not fingerprints:
        raise TrustedKeysError(f"trusted key file {path} holds no valid OpenPGP public key")
    return OpenPGPKeyFile(name=path.name, armored=text, fingerprints=fingerprints)


def _load_allowed_signers(path: Path) -> str:
    text = _read_text(path)
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not _is_signer_line(stripped):
            raise TrustedKeysError(
                f"{path}:{number}: not an allowed_signers entry "
                "(expected: principals [options] key-type base64-key)"
            )
    return text


def _is_signer_line(line: str) -> bool:
    try:
        fields = shlex.split(line, comments=False, posix=True)
    except ValueError:
        return False
    for index, field in enumerate(fields[1:], start=1):
        if field in _SSH_KEY_TYPES and index + 1 < len(fields):
            try:
                base64.b64decode(fields[index + 1], validate=True)
            except (binascii.Error, ValueError):
                return False
            return True
    return False

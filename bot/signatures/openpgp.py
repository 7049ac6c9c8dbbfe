"""OpenPGP commit signatures, checked by gpg (through python-gnupg) in a throwaway keyring.

The keyring holds only the trusted keys, so "signed by a key gpg cannot find"
means "not trusted". For speed, many commits are checked in one gpg process:
each detached signature is paired with its payload as a PGP 2.x style signed
message (signature packet, then a literal data packet) and gpg verifies them
all with ``--multifile --verify``. For a binary (class 0x00) v4 signature
this hashes exactly the bytes git's detached check hashes. Anything other than
a clear-cut result there is re-checked the way git does it: ``gpg --verify
sig -`` with the payload on stdin.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import gnupg

from bot.models import CommitCheck
from bot.signatures.commit import SignedCommit
from bot.signatures.keys import TrustedKeys, TrustedKeysError
from bot.signatures.result import Checked

_GPG_OPTIONS = ["--no-autostart", "--trust-model", "always", "--no-auto-check-trustdb"]
_SIGNATURE_TAG = 2
_NO_PUBKEY = "9"
# Below this many signatures a second gpg process costs more than it saves.
_MIN_PER_PROCESS = 48
_MAX_PER_PROCESS = 2000


class SignatureToolError(RuntimeError):
    """gpg or ssh-keygen could not be run at all (not a verdict on a commit)."""


class MalformedSignature(ValueError):
    """The signature block is not one well-formed OpenPGP signature packet."""


@dataclass(frozen=True)
class SignaturePacket:
    raw: bytes  # the whole packet, header included
    version: int
    sig_class: int


class _StatusLog(gnupg.StatusHandler):
    """Every ``[GNUPG:]`` status line, in order."""

    def __init__(self, gpg: gnupg.GPG) -> None:
        super().__init__(gpg)
        self.events: list[tuple[str, str]] = []

    def handle_status(self, key: str, value: str) -> None:
        self.events.append((key, value))


class _KeyringGPG(gnupg.GPG):
    """python-gnupg bound to one isolated home, with the two verify calls Sluice needs."""

    def verify_detached(self, signature_path: str, payload: bytes) -> list[tuple[str, str]]:
        log = _StatusLog(self)
        self._handle_io(["--verify", signature_path, "-"], io.BytesIO(payload), log, binary=True)
        return log.events

    def verify_multifile(self, paths: list[str]) -> list[tuple[str, str]]:
        log = _StatusLog(self)
        process = self._open_subprocess(["--multifile", "--verify", *paths])
        self._collect_output(process, log, stdin=process.stdin)
        return log.events


class OpenPGPVerifier:
    """Checks OpenPGP-signed commits against the trusted keys only."""

    def __init__(self, keys: TrustedKeys, workdir: Path, max_workers: int | None = None) -> None:
        self._workdir = workdir
        self._max_workers = max_workers or os.cpu_count() or 1
        home = workdir / "gnupg"
        home.mkdir(mode=0o700)
        try:
            self._gpg = _KeyringGPG(gnupghome=str(home), options=_GPG_OPTIONS)
        except (OSError, ValueError) as exc:
            raise SignatureToolError(f"cannot run gpg: {exc}") from None
        for key_file in keys.openpgp:
            imported = self._gpg.import_keys(key_file.armored)
            if not imported.fingerprints:
                raise TrustedKeysError(f"trusted key file {key_file.name} could not be imported")
        self._expiry = self._key_expiry()

    def _key_expiry(self) -> dict[str, float]:
        """Expiry time of every imported primary key and subkey, by fingerprint."""
        expiry: dict[str, float] = {}
        for key in self._gpg.list_keys():
            if key.get("expires"):
                expiry[key["fingerprint"]] = float(key["expires"])
            info = key.get("subkey_info", {})
            for keyid, _cap, fpr, _grip in key.get("subkeys", []):
                expires = info.get(keyid, {}).get("expires")
                if fpr and expires:
                    expiry[fpr] = float(expires)
        return expiry

    def verify_many(self, commits: list[SignedCommit]) -> dict[str, Checked]:
        """A verdict for every commit (all must carry an OpenPGP signature)."""
        results: dict[str, Checked] = {}
        batchable: list[tuple[SignedCommit, bytes]] = []
        exact: list[SignedCommit] = []
        for commit in commits:
            try:
                packet = parse_signature(commit.signature)
            except MalformedSignature as exc:
                results[commit.sha] = Checked(_invalid(commit.sha, str(exc)))
                continue
            if packet.version == 4 and packet.sig_class == 0x00:
                batchable.append((commit, packet.raw + literal_packet(commit.payload)))
            else:
                exact.append(commit)
        with tempfile.TemporaryDirectory(dir=self._workdir) as scratch:
            undecided = self._verify_batched(batchable, Path(scratch), results)
            exact.extend(undecided)
            with ThreadPoolExecutor(max_workers=self._max_workers) as pool:
                checked = pool.map(lambda c: self._verify_exact(c, Path(scratch)), exact)
                results.update(zip((c.sha for c in exact), checked, strict=True))
        return results

    def verify_one(self, commit: SignedCommit) -> Checked:
        return self.verify_many([commit])[commit.sha]

    def _verify_batched(
        self, items: list[tuple[SignedCommit, bytes]], scratch: Path, results: dict[str, Checked]
    ) -> list[SignedCommit]:
        """Check ``items`` in a few gpg processes; return the commits left undecided."""
        if not items:
            return []
        by_path: dict[str, SignedCommit] = {}
        for index, (commit, message) in enumerate(items):
            path = scratch / f"{index}.sig"
            path.write_bytes(message)
            by_path[str(path)] = commit
        paths = list(by_path)
        processes = max(1, min(self._max_workers, len(paths) // _MIN_PER_PROCESS))
        size = min(_MAX_PER_PROCESS, -(-len(paths) // processes))
        chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
        undecided: list[SignedCommit] = []
        with ThreadPoolExecutor(max_workers=processes) as pool:
            for outcomes in pool.map(self._run_multifile, chunks):
                for path, events in outcomes:
                    commit = by_path[path]
                    checked = classify(commit.sha, events, self._expiry, conclusive_only=True)
                    if checked is None:
                        undecided.append(commit)
                    else:
                        results[commit.sha] = checked
        return undecided

    def _run_multifile(self, paths: list[str]) -> list[tuple[str, list[tuple[str, str]]]]:
        """Per file, its status lines. gpg in batch mode stops at a bad signature,
        so the rest is resumed in a new process; files never reached get no events."""
        outcomes: list[tuple[str, list[tuple[str, str]]]] = []
        remaining = paths
        while remaining:
            per_file = dict(_split_by_file(self._gpg.verify_multifile(remaining)))
            reached = [p for p in remaining if p in per_file]
            if not reached:
                outcomes.extend((p, []) for p in remaining)
                break
            outcomes.extend((p, per_file[p]) for p in reached)
            remaining = remaining[remaining.index(reached[-1]) + 1 :]
        return outcomes

    def _verify_exact(self, commit: SignedCommit, scratch: Path) -> Checked:
        # gpg gets the one packet we vetted, never the raw text: that could hold
        # a second armored block which gpg would read and we did not check.
        packet = parse_signature(commit.signature)
        fd, path = tempfile.mkstemp(dir=scratch, suffix=".sig")
        with os.fdopen(fd, "wb") as handle:
            handle.write(packet.raw)
        events = self._gpg.verify_detached(path, commit.payload)
        checked = classify(commit.sha, events, self._expiry, conclusive_only=False)
        assert checked is not None  # conclusive_only=False always decides
        return checked

    def close(self) -> None:
        shutil.rmtree(self._workdir / "gnupg", ignore_errors=True)


def classify(
    sha: str, events: list[tuple[str, str]], expiry: dict[str, float], *, conclusive_only: bool
) -> Checked | None:
    """Map one signature's gpg status lines to a verdict.

    With ``conclusive_only`` (the batched path), anything that is not clearly one
    of good / expired / revoked / unknown key returns None to be re-checked exactly.
    """
    keys = [key for key, _ in events]
    values = dict(events)
    if keys.count("NEWSIG") != 1:
        if conclusive_only:
            return None
        detail = "no signature found" if "NEWSIG" not in keys else "more than one signature"
        return Checked(_invalid(sha, detail))
    validsig = values.get("VALIDSIG", "").split()
    if validsig:
        signer_key, primary = validsig[0], (validsig[9] if len(validsig) > 9 else validsig[0])
        for key, status, detail in (
            ("REVKEYSIG", "revoked", "signing key has been revoked"),
            ("EXPKEYSIG", "expired", "signing key has expired"),
            ("EXPSIG", "expired", "signature has expired"),
            ("GOODSIG", "valid", ""),
        ):
            if key in values:
                check = CommitCheck(
                    sha=sha,
                    status=status,  # type: ignore[arg-type]
                    method="gpg",
                    signer=_status_text(values[key].partition(" ")[2]),
                    fingerprint=primary,
                    detail=detail,
                )
                until = _valid_until(validsig, signer_key, primary, expiry)
                return Checked(check, until if status == "valid" else None)
    errsig = values.get("ERRSIG", "").split()
    if errsig and len(errsig) > 5 and errsig[5] == _NO_PUBKEY:
        fingerprint = errsig[6] if len(errsig) > 6 and errsig[6] != "-" else errsig[0]
        return Checked(
            CommitCheck(
                sha=sha,
                status="untrusted",
                method="gpg",
                fingerprint=fingerprint,
                detail="signed by a key that is not in the trusted set",
            )
        )
    if conclusive_only:
        return None
    if "BADSIG" in values:
        signer = _status_text(values["BADSIG"].partition(" ")[2])
        return Checked(_invalid(sha, "bad signature: the commit does not match it", signer))
    if errsig:
        return Checked(_invalid(sha, f"gpg cannot check the signature (error {errsig[5]})"))
    return Checked(_invalid(sha, "gpg did not accept the signature"))


def _valid_until(
    validsig: list[str], signer_key: str, primary: str, expiry: dict[str, float]
) -> float | None:
    limits = [expiry[f] for f in (signer_key, primary) if f in expiry]
    if len(validsig) > 3 and validsig[3] not in ("", "0"):
        limits.append(float(validsig[3]))
    return min(limits) if limits else None


def _invalid(sha: str, detail: str, signer: str = "") -> CommitCheck:
    return CommitCheck(sha=sha, status="invalid", method="gpg", signer=signer, detail=detail)


def _status_text(value: str) -> str:
    """A user id from a status line: python-gnupg hands it over as latin-1; gpg %-escapes."""
    raw = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), value.encode("latin-1"))
    return raw.decode("utf-8", errors="replace")


def _split_by_file(events: list[tuple[str, str]]) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    current: str | None = None
    collected: list[tuple[str, str]] = []
    for key, value in events:
        if key == "FILE_START":
            current, collected = value.partition(" ")[2], []
        elif key == "FILE_DONE" and current is not None:
            yield current, collected
            current = None
        elif current is not None:
            collected.append((key, value))
    if current is not None:  # gpg stopped inside this file
        yield current, collected


# --- OpenPGP wire format (RFC 4880): just enough to pair a signature with its data.


def parse_signature(armored: bytes) -> SignaturePacket:
    """The single signature packet inside an armored detached signature."""
    data = dearmor(armored)
    packets = list(_packets(data))
    if len(packets) != 1 or packets[0][0] != _SIGNATURE_TAG:
        raise MalformedSignature("signature block must hold exactly one signature packet")
    _tag, raw, body = packets[0]
    if not body:
        raise MalformedSignature("empty signature packet")
    version = body[0]
    if version == 4 and len(body) > 1:
        sig_class = body[1]
    elif version == 3 and len(body) > 2:
        sig_class = body[2]
    else:
        raise MalformedSignature(f"unsupported signature packet version {version}")
    return SignaturePacket(raw=raw, version=version, sig_class=sig_class)


def dearmor(armored: bytes) -> bytes:
    lines = armored.decode("ascii", errors="replace").splitlines()
    try:
        begin = next(i for i, line in enumerate(lines) if line.startswith("-----BEGIN PGP "))
        end = next(i for i in range(begin + 1, len(lines)) if lines[i].startswith("-----END PGP "))
    except StopIteration:
        raise MalformedSignature("no complete ASCII-armored block") from None
    body = lines[begin + 1 : end]
    # Armor headers ("Key: value") run up to the first blank line, if there is one.
    if "" in (line.strip() for line in body):
        blank = next(i for i, line in enumerate(body) if not line.strip())
        if all(":" in line for line in body[:blank]):
            body = body[blank + 1 :]
    checksum = None
    if body and body[-1].startswith("="):
        checksum = body.pop()[1:]
    try:
        data = base64.b64decode("".join(line.strip() for line in body), validate=True)
        if checksum is not None and base64.b64decode(checksum) != _crc24(data):
            raise MalformedSignature("armor checksum mismatch")
    except (binascii.Error, ValueError) as exc:
        if isinstance(exc, MalformedSignature):
            raise
        raise MalformedSignature("armor is not valid base64") from None
    return data


def _crc24(data: bytes) -> bytes:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return (crc & 0xFFFFFF).to_bytes(3, "big")


def _packets(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(tag, whole packet, body) for each packet; partial lengths are refused."""
    pos = 0
    while pos < len(data):
        start, first = pos, data[pos]
        if not first & 0x80:
            raise MalformedSignature("not an OpenPGP packet")
        if first & 0x40:  # new format
            tag = first & 0x3F
            length, pos = _new_length(data, pos + 1)
        else:
            tag, length_type = (first >> 2) & 0x0F, first & 0x03
            if length_type == 3:
                raise MalformedSignature("indeterminate packet length")
            size = 1 << length_type
            if pos + 1 + size > len(data):
                raise MalformedSignature("truncated packet header")
            length = int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
            pos += 1 + size
        if pos + length > len(data):
            raise MalformedSignature("truncated packet")
        yield tag, data[start : pos + length], data[pos : pos + length]
        pos += length


def _new_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise MalformedSignature("truncated packet header")
    first = data[pos]
    if first < 192:
        return first, pos + 1
    if first < 224 and pos + 1 < len(data):
        return ((first - 192) << 8) + data[pos + 1] + 192, pos + 2
    if first == 255 and pos + 4 < len(data):
        return struct.unpack(">I", data[pos + 1 : pos + 5])[0], pos + 5
    raise MalformedSignature("unsupported packet length")


def literal_packet(payload: bytes) -> bytes:
    """A binary literal data packet (no file name, no date) carrying ``payload``."""
    body = b"b\x00\x00\x00\x00\x00" + payload
    length = len(body)
    if length < 192:
        header = bytes([length])
    elif length < 8384:
        length -= 192
        header = bytes([(length >> 8) + 192, length & 0xFF])
    else:
        header = b"\xff" + struct.pack(">I", length)
    return b"\xcb" + header + body

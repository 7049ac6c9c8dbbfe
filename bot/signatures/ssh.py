"""SSH commit signatures, checked the way git does: ``ssh-keygen -Y`` with an allowed_signers file.

As in git: ``find-principals`` names the signer from the allowed_signers file,
``verify`` checks the signature for that principal in the "git" namespace, and
``check-novalidate`` tells a good signature by an unknown key (untrusted) from
a broken one (invalid). Keys are checked at the current time, like gpg does, so
an entry whose ``valid-before`` has passed makes its commits "expired".
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bot.models import CommitCheck
from bot.signatures.commit import SignedCommit
from bot.signatures.keys import TrustedKeys
from bot.signatures.openpgp import SignatureToolError
from bot.signatures.result import Checked

NAMESPACE = "git"
_TIMEOUT_S = 30
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/=]+")


class SSHVerifier:
    """Checks SSH-signed commits against the trusted allowed_signers entries only."""

    def __init__(self, keys: TrustedKeys, workdir: Path, max_workers: int | None = None) -> None:
        self._workdir = workdir
        self._max_workers = max_workers or 2 * (os.cpu_count() or 1)
        self._allowed = workdir / "allowed_signers"
        self._allowed.write_text(keys.allowed_signers, encoding="utf-8")
        self._time_bound = "valid-before" in keys.allowed_signers

    def verify_many(self, commits: list[SignedCommit]) -> dict[str, Checked]:
        with ThreadPoolExecutor(max_workers=self._max_workers) as pool:
            return dict(
                zip((c.sha for c in commits), pool.map(self.verify_one, commits), strict=True)
            )

    def verify_one(self, commit: SignedCommit) -> Checked:
        fd, name = tempfile.mkstemp(dir=self._workdir, suffix=".sshsig")
        signature = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(commit.signature)
            return self._verify(commit, signature)
        finally:
            signature.unlink(missing_ok=True)

    def _verify(self, commit: SignedCommit, signature: Path) -> Checked:
        found = self._keygen(
            "-Y", "find-principals", "-f", str(self._allowed), "-s", str(signature)
        )
        principals = found.stdout.decode(errors="replace").split()
        for principal in principals if found.returncode == 0 else []:
            verified = self._keygen(
                "-Y", "verify", "-f", str(self._allowed), "-I", principal,
                "-n", NAMESPACE, "-s", str(signature),
                payload=commit.payload,
            )  # fmt: skip
            if verified.returncode == 0:
                check = CommitCheck(
                    sha=commit.sha,
                    status="valid",
                    method="ssh",
                    signer=principal,
                    fingerprint=_fingerprint(verified),
                )
                # A verdict that hangs on a validity window is re-checked every run.
                return Checked(check, valid_until=0.0 if self._time_bound else None)
        unchecked = self._keygen(
            "-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(signature),
            payload=commit.payload,
        )  # fmt: skip
        if unchecked.returncode != 0:
            return Checked(
                CommitCheck(
                    sha=commit.sha,
                    status="invalid",
                    method="ssh",
                    signer=principals[0] if principals else "",
                    detail="bad signature: the commit does not match it",
                )
            )
        fingerprint = _fingerprint(unchecked)
        if b"key has expired" in found.stderr or b"not yet valid" in found.stderr:
            return Checked(
                CommitCheck(
                    sha=commit.sha,
                    status="expired",
                    method="ssh",
                    fingerprint=fingerprint,
                    detail="signing key is outside its allowed_signers validity period",
                ),
                valid_until=0.0 if b"not yet valid" in found.stderr else None,
            )
        return Checked(
            CommitCheck(
                sha=commit.sha,
                status="untrusted",
                method="ssh",
                signer=principals[0] if principals else "",
                fingerprint=fingerprint,
                detail="signed by a key that is not in allowed_signers",
            )
        )

    def _keygen(self, *args: str, payload: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                ["ssh-keygen", *args],
                input=payload,
                capture_output=True,
                timeout=_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SignatureToolError(f"cannot run ssh-keygen: {exc}") from None


def _fingerprint(proc: subprocess.CompletedProcess[bytes]) -> str:
    match = _FINGERPRINT.search((proc.stdout + proc.stderr).decode(errors="replace"))
    return match.group(0) if match else ""

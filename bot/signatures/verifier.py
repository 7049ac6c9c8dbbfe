"""Signature checks over a commit range: the ``signatures`` gate."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import get_args

from bot.gitops import Git
from bot.models import CommitCheck, SignatureMode, SignatureReport
from bot.signatures.cache import VerdictCache
from bot.signatures.commit import SignedCommit, read_commits, split_signed_commit
from bot.signatures.keys import TrustedKeys
from bot.signatures.openpgp import OpenPGPVerifier
from bot.signatures.result import Checked
from bot.signatures.ssh import SSHVerifier

MODES: tuple[str, ...] = get_args(SignatureMode)


class SignatureVerifier:
    """Verifies commit signatures against one trusted key set.

    Owns a throwaway gpg home built only from ``keys``; call :meth:`close` (or
    use it as a context manager) to remove it. Verdicts are cached by commit SHA
    and the trust set's id, in memory and, with ``cache_dir``, on disk.
    """

    def __init__(self, keys: TrustedKeys, cache_dir: Path | None = None) -> None:
        self.keys = keys
        self._workdir = Path(tempfile.mkdtemp(prefix="sluice-signatures-"))
        try:
            self._openpgp = OpenPGPVerifier(keys, self._workdir)
            self._ssh = SSHVerifier(keys, self._workdir)
            self._cache = VerdictCache(keys.trust_id, cache_dir)
        except BaseException:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise

    def verify(self, git: Git, base: str, head: str, mode: str) -> SignatureReport:
        """Check the commits ``mode`` selects: all of base..head, the head only, or none."""
        if mode not in MODES:
            raise ValueError(
                f"unknown signature mode {mode!r} (expected one of {', '.join(MODES)})"
            )
        if mode == "off":
            return SignatureReport(verdict="skipped", mode="off")
        shas = git.rev_list(base, head) if mode == "all" else [git.resolve(head)]
        commits = self.check_commits(git, shas)
        verdict = "pass" if all(c.status == "valid" for c in commits) else "fail"
        return SignatureReport(verdict=verdict, mode=mode, commits=commits)  # type: ignore[arg-type]

    def check_commit(self, git: Git, sha: str) -> CommitCheck:
        """The verdict on one commit (any revision name that resolves to a commit)."""
        return self.check_commits(git, [git.resolve(sha)])[0]

    def check_commits(self, git: Git, shas: list[str]) -> list[CommitCheck]:
        """Verdicts for full commit SHAs, in the order given."""
        known = self._cache.get_many(shas)
        todo = [sha for sha in dict.fromkeys(shas) if sha not in known]
        if todo:
            fresh = self._check_uncached(git, todo)
            self._cache.put_many(list(fresh.values()))
            known.update({sha: checked.check for sha, checked in fresh.items()})
        return [known[sha] for sha in shas]

    def _check_uncached(self, git: Git, shas: list[str]) -> dict[str, Checked]:
        raw = read_commits(git, shas)
        commits = [split_signed_commit(sha, raw[sha]) for sha in shas]
        results: dict[str, Checked] = {}
        by_format: dict[str, list[SignedCommit]] = {"openpgp": [], "ssh": []}
        for commit in commits:
            if not commit.is_signed:
                results[commit.sha] = Checked(CommitCheck(commit.sha, "unsigned", "none"))
            elif commit.format in by_format:
                by_format[commit.format].append(commit)
            else:
                results[commit.sha] = Checked(_unsupported(commit))
        if by_format["openpgp"]:
            results.update(self._openpgp.verify_many(by_format["openpgp"]))
        if by_format["ssh"]:
            results.update(self._ssh.verify_many(by_format["ssh"]))
        if self.keys.notes:  # say why nothing is trusted (e.g. no key directory)
            for sha, checked in results.items():
                if checked.check.status == "untrusted":
                    check = replace(checked.check, detail="; ".join(self.keys.notes))
                    results[sha] = replace(checked, check=check)
        return results

    def close(self) -> None:
        self._cache.close()
        self._openpgp.close()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> SignatureVerifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _unsupported(commit: SignedCommit) -> CommitCheck:
    if commit.format == "x509":
        return CommitCheck(
            commit.sha, "untrusted", "none", detail="X.509 signatures are not supported"
        )
    return CommitCheck(commit.sha, "invalid", "none", detail="unrecognised signature format")

"""Verifying the ledger (the puller's side): a trusted tip, and entries the bot signed."""

from __future__ import annotations

import weakref
from contextlib import closing
from dataclasses import dataclass, field

from bot.config.signing import DEFAULT_LEDGER_BRANCH as DEFAULT_BRANCH
from bot.deploy.ledger.branch import Ledger
from bot.deploy.ledger.entry import LedgerEntry, read_entry
from bot.errors import LedgerError
from bot.gitops import Git, GitError
from bot.models import CommitCheck
from bot.signatures import SignatureVerifier, TrustedKeys


@dataclass(frozen=True)
class VerifiedLedger:
    """A ledger tip whose signature was checked against the trusted bot keys."""

    git: Git
    branch: str
    tip: str
    check: CommitCheck
    keys: TrustedKeys = field(repr=False)
    signatures: LedgerSignatures | None = field(default=None, repr=False, compare=False)

    def entry(self, app: str) -> LedgerEntry | None:
        return read_entry(self.git, self.tip, app)

    def approved_revision(
        self, app: str, tracked_branch: str, *, allow_preview_deploy: bool = False
    ) -> LedgerEntry:
        """The entry for ``app`` if the puller may deploy it, else :class:`LedgerError`.

        The commit that last wrote the entry must itself carry a trusted bot
        signature (a signed tip on top of a forged entry is not enough), and the
        revision must be reachable from ``tracked_branch``, except for a
        ``preview-deploy`` of an app that allows it (``allow_preview_deploy``): that
        revision is an open pull request's head, which no tracked branch holds yet.
        """
        entry = self.entry(app)
        if entry is None:
            raise LedgerError(f"the ledger at {self.tip[:12]} has no entry for app {app!r}")
        preview = entry.action == "preview-deploy"
        if preview and not allow_preview_deploy:
            raise LedgerError(
                f"app {app!r}: the ledger entry is a preview-deploy, which this app does not allow"
            )
        writer = self.git.run("log", "-1", "--format=%H", self.tip, "--", entry.path)
        writer_sha = writer.decode().strip()
        if writer_sha != self.tip:
            what = f"ledger entry for {app!r}"
            if self.signatures is not None:
                self.signatures.require(self.git, writer_sha, what)
            else:
                with closing(LedgerSignatures(self.keys)) as signatures:
                    signatures.require(self.git, writer_sha, what)
        if self.git.run("cat-file", "-t", entry.revision, check=False).strip() != b"commit":
            raise LedgerError(
                f"app {app!r}: approved revision {entry.revision[:12]} is not in the repository"
            )
        try:
            tracked = self.git.resolve(tracked_branch)
        except GitError as exc:
            raise LedgerError(f"tracked branch: {exc}") from None
        if not preview and not self.git.is_ancestor(entry.revision, tracked):
            raise LedgerError(
                f"app {app!r}: revision {entry.revision[:12]} is not reachable from "
                f"{tracked_branch} ({tracked[:12]}); refusing to deploy it"
            )
        return entry


def verify_tip(
    git: Git,
    trusted: TrustedKeys,
    branch: str = DEFAULT_BRANCH,
    *,
    not_before: str | None = None,
    signatures: LedgerSignatures | None = None,
) -> VerifiedLedger:
    """Check that the ledger tip is signed by a trusted bot key.

    With ``not_before`` (the last ledger commit the caller acted on) the tip must
    descend from it, so a ledger rewound to an older signed commit is refused.
    ``signatures`` (for ``trusted``) is reused for the tip and, through the result,
    for every entry checked; without it each check builds its own verifier.
    """
    ledger = Ledger(git, branch)
    tip = ledger.tip()
    if tip is None:
        raise LedgerError(f"ledger branch {branch} does not exist")
    if not_before is not None and not git.is_ancestor(not_before, tip):
        raise LedgerError(
            f"ledger branch {branch} at {tip[:12]} does not descend from {not_before[:12]}, "
            "the last ledger commit acted on: it was rewound or rewritten"
        )
    if signatures is not None and signatures.keys.trust_id != trusted.trust_id:
        raise ValueError("verify_tip: the signatures given check another trust set")
    if signatures is None:
        with closing(LedgerSignatures(trusted)) as own:
            check = own.require(git, tip, f"ledger tip of {branch}")
    else:
        check = signatures.require(git, tip, f"ledger tip of {branch}")
    return VerifiedLedger(
        git=git, branch=branch, tip=tip, check=check, keys=trusted, signatures=signatures
    )


class LedgerSignatures:
    """Checks ledger commits against one trust set with one verifier, built on first use.

    Building a verifier imports every trusted key into a fresh gpg home, which costs
    more than checking a signature: a caller that checks many entries (the puller, once
    per app every cycle) keeps one of these for as long as the trust set stays the same,
    and verdicts are remembered by commit SHA meanwhile.
    """

    def __init__(self, keys: TrustedKeys) -> None:
        self.keys = keys
        self._verifier: SignatureVerifier | None = None
        self._finalizer: weakref.finalize[[], None] | None = None

    def require(self, git: Git, sha: str, what: str) -> CommitCheck:
        """The check of ``sha`` if a trusted bot key signed it, else :class:`LedgerError`."""
        if self._verifier is None:
            self._verifier = SignatureVerifier(self.keys)
            # An owner dropped without close() (a test's agent) still removes the gpg home.
            self._finalizer = weakref.finalize(self, self._verifier.close)
        check = self._verifier.check_commit(git, sha)
        if check.status != "valid":
            detail = f": {check.detail}" if check.detail else ""
            raise LedgerError(
                f"{what} ({sha[:12]}) is {check.status}, not signed by a trusted bot key{detail}"
            )
        return check

    def close(self) -> None:
        if self._verifier is not None:
            assert self._finalizer is not None
            self._finalizer()  # closes the verifier, once
            self._verifier = None

"""Whether a revision's commits may reach the cluster: the signature chain from the frontier.

Under ``signatures.mode: all`` every commit reachable from the revision and from neither
the operator's ``trust_anchor`` nor a tip of the verified frontier must carry a valid
signature by a trusted key; an unsigned commit passes only as a forge's clean merge
(its tree is exactly git's merge of its two parents, whose own commits are in the range
too, second-parent side included). The range a ledger entry claims (``previous``) is
never used: an unsigned commit cannot ride in under a signed child, and a new app's
first revision is checked like any other. Once a range verifies, the revision joins
the frontier, so the next check starts there.

``mode: head`` checks the revision (and, for an unsigned clean merge, the PR head it
merged); ``off`` checks nothing. Neither moves the frontier: what they let through was
not verified commit by commit.
"""

from __future__ import annotations

from pathlib import Path

from bot.gitops import Git, GitError
from bot.puller.frontier import FrontierStore
from bot.signatures import SignatureVerifier, TrustedKeys, TrustedKeysError
from bot.signatures.merges import is_clean_merge, merge_parents

MAX_LISTED_PROBLEMS = 5


class Refused(Exception):
    """A check failed: nothing is applied. ``phase`` is what the app shows."""

    def __init__(self, message: str, phase: str = "Held") -> None:
        super().__init__(message)
        self.phase = phase
        self.apps: list[str] = []  # for a refusal of the whole ledger: the apps it holds


class ChainVerifier:
    """Checks revisions against the verified frontier of one repository and advances it."""

    def __init__(
        self,
        store: FrontierStore,
        *,
        repository: str,
        trust_anchor: str,
        trusted_keys: Path,
        cache_dir: Path,
    ) -> None:
        self._store = store
        self._repository = repository
        self._anchor = trust_anchor
        self._trusted_keys = trusted_keys
        self._cache_dir = cache_dir

    def check_anchor(self, git: Git, tracked: str, branch: str) -> None:
        """The anchor must be a commit on the tracked branch, or nothing can be judged."""
        where = f"trust_anchor {self._anchor[:12]} (puller config)"
        if not _is_commit(git, self._anchor):
            raise Refused(f"{where} is not a commit in the repository")
        if not git.is_ancestor(self._anchor, tracked):
            raise Refused(f"{where} is not on {branch} ({tracked[:12]})")

    def frontier(self) -> list[str]:
        return self._store.load(self._repository)

    def unverified(self, git: Git, revision: str) -> list[str]:
        """Commits reachable from ``revision`` and from neither the anchor nor a tip, oldest
        first. Tips the repository no longer holds (a force-push) are left out."""
        tips = [tip for tip in self.frontier() if _is_commit(git, tip)]
        exclude = [f"^{sha}" for sha in dict.fromkeys([self._anchor, *tips])]
        out = git.run("rev-list", "--reverse", revision, *exclude, "--")
        return out.decode().split()

    def verify(self, git: Git, revision: str, mode: str) -> None:
        """Raise :class:`Refused` unless ``revision`` may be deployed under ``mode``."""
        if mode == "off":
            return
        try:
            if mode == "all":
                shas = self.unverified(git, revision)
            else:
                # A forge's unsigned merge commit stands for the PR head it merged.
                shas = [revision, *merge_parents(git, revision)[1:]]
        except GitError as exc:
            raise Refused(f"cannot list the commits of {revision[:12]}: {exc}") from None
        if shas:
            self._check(git, shas, mode)
        if mode == "all":
            self._advance(git, revision)

    def _check(self, git: Git, shas: list[str], mode: str) -> None:
        try:
            keys = TrustedKeys.load(self._trusted_keys)
        except TrustedKeysError as exc:
            raise Refused(f"trusted keys: {exc}") from None
        with SignatureVerifier(keys, cache_dir=self._cache_dir) as verifier:
            checks = verifier.check_commits(git, shas)
        bad = [
            check
            for check in checks
            if check.status != "valid"
            and not (check.status == "unsigned" and is_clean_merge(git, check.sha))
        ]
        if bad:
            shown = bad[:MAX_LISTED_PROBLEMS]
            listed = ", ".join(f"{c.sha[:12]} is {c.status}" for c in shown)
            more = f" and {len(bad) - len(shown)} more" if len(bad) > len(shown) else ""
            since = " since the verified frontier" if mode == "all" else ""
            raise Refused(f"signatures (mode {mode}){since}: {listed}{more}")

    def _advance(self, git: Git, revision: str) -> None:
        tips = self.frontier()
        if revision in tips:
            return
        kept = [tip for tip in tips if _is_commit(git, tip) and not git.is_ancestor(tip, revision)]
        if any(git.is_ancestor(revision, tip) for tip in kept):
            return  # already covered by a later tip (a rollback)
        self._store.save(self._repository, [*kept, revision])


def _is_commit(git: Git, sha: str) -> bool:
    return git.run("cat-file", "-t", sha, check=False).strip() == b"commit"

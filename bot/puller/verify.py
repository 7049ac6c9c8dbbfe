"""The verify decision: which revision each app may run, and whether its commits are signed.

A cycle opens by fetching the repository and checking the ledger tip (signed by a bot
key, not rewound) and the ``trust_anchor``; gate settings come from ``.sluice.yaml`` at
the TRACKED BRANCH TIP, never from the revision being judged. Per app, the ledger entry
must name a revision reachable from the tracked branch (or a preview-deploy the app
allows), and then the signature chain below must hold.

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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.config import REPO_CONFIG_FILE, ConfigError, RepoConfig, parse_repo_config
from bot.deploy.ledger import APPS_DIR, LedgerEntry, LedgerError, VerifiedLedger, verify_tip
from bot.deploy.ledger.verify import LedgerSignatures
from bot.gitops import Git, GitError, Mirrors
from bot.puller.config import PullerConfig
from bot.puller.frontier import FrontierStore
from bot.signatures import SignatureVerifier, TrustedKeys, TrustedKeysError
from bot.signatures.merges import is_clean_merge, merge_parents

MAX_LISTED_PROBLEMS = 5
MIRROR_KEY = "gitops"
LEDGER_STATE_KEY = "ledger_commit"


class Refused(Exception):
    """A check failed: nothing is applied. ``phase`` is what the app shows."""

    def __init__(self, message: str, phase: str = "Held") -> None:
        super().__init__(message)
        self.phase = phase
        self.apps: list[str] = []  # for a refusal of the whole ledger: the apps it holds


@dataclass(frozen=True)
class Cycle:
    """What every app of one cycle shares."""

    git: Git
    ledger: VerifiedLedger
    tracked: str
    gate: RepoConfig


class LedgerGate:
    """Opens a cycle (fetch, ledger tip, anchor, gate settings) and finds each app's entry."""

    def __init__(
        self,
        config: PullerConfig,
        mirrors: Mirrors,
        chain: ChainVerifier,
        *,
        last_ledger: Callable[[], str | None],
        owns: Callable[[str], bool],
    ) -> None:
        self.config = config
        self._mirrors = mirrors
        self._chain = chain
        self._last_ledger = last_ledger
        self._owns = owns
        self._signatures: LedgerSignatures | None = None

    def open_cycle(self) -> Cycle:
        config = self.config
        try:
            git = self._mirrors.fetch(
                MIRROR_KEY,
                config.repo_url,
                [config.tracked_ref, config.ledger_ref],
                auth=config.git_auth,
            )
            tracked = git.resolve(config.tracked_ref)
        except GitError as exc:
            raise Refused(f"cannot fetch {config.tracked_branch} and the ledger: {exc}") from None
        try:
            bot_keys = TrustedKeys.load(config.bot_keys)
            ledger = verify_tip(
                git,
                bot_keys,
                config.ledger_branch,
                not_before=self._last_ledger(),
                signatures=self._signatures_for(bot_keys),
            )
        except (LedgerError, TrustedKeysError, GitError) as exc:
            refused = Refused(f"ledger refused: {exc}")
            # Untrusted, but good enough to say which apps are held and why.
            refused.apps = self.named_apps(git, config.ledger_ref)
            raise refused from None
        try:
            self._chain.check_anchor(git, tracked, config.tracked_branch)
        except Refused as exc:
            exc.apps = self.named_apps(git, ledger.tip)
            raise
        gate = repo_config(git, tracked, f"{config.tracked_branch} ({tracked[:12]})")
        return Cycle(git=git, ledger=ledger, tracked=tracked, gate=gate)

    def _signatures_for(self, keys: TrustedKeys) -> LedgerSignatures:
        """One verifier for the bot keys while they stay the same (a new one when the
        mounted keys change), not one per app per cycle."""
        if self._signatures is None or self._signatures.keys.trust_id != keys.trust_id:
            self.close()
            self._signatures = LedgerSignatures(keys)
        return self._signatures

    def close(self) -> None:
        if self._signatures is not None:
            self._signatures.close()
            self._signatures = None

    def named_apps(self, git: Git, ledger: str) -> list[str]:
        """Owned apps with an entry in the ledger commit ``ledger``."""
        try:
            entries = git.tree(ledger, APPS_DIR)
        except GitError:
            return []
        names = []
        for entry in entries:
            name = entry.path.removeprefix(f"{APPS_DIR}/").removesuffix(".yaml")
            if entry.path.endswith(".yaml") and "/" not in name and self._owns(name):
                names.append(name)
        return sorted(names)

    def approved(self, cycle: Cycle, name: str) -> tuple[LedgerEntry, str]:
        """The app's approved entry and the ledger commit that wrote it."""
        gate_app = cycle.gate.app(name)
        allow_preview = bool(gate_app and gate_app.sync_before_merge)
        try:
            if allow_preview:
                self._fetch_preview(cycle, name)
            entry = cycle.ledger.approved_revision(
                name, self.config.tracked_ref, allow_preview_deploy=allow_preview
            )
        except (LedgerError, GitError) as exc:
            raise Refused(str(exc)) from None
        path = f"{APPS_DIR}/{name}.yaml"
        writer = cycle.git.run("log", "-1", "--format=%H", cycle.ledger.tip, "--", path)
        return entry, writer.decode().strip()

    def _fetch_preview(self, cycle: Cycle, name: str) -> None:
        """A preview-deploy names an open pull request's head, which the tracked branch
        and the ledger do not bring along: fetch it by SHA, else by the forge's PR ref."""
        entry = cycle.ledger.entry(name)
        if entry is None or entry.action != "preview-deploy":
            return
        if _is_commit(cycle.git, entry.revision):
            return
        wants = [[entry.revision]]
        if entry.pr is not None:
            wants += [[f"refs/pull/{entry.pr}/head"], [f"refs/merge-requests/{entry.pr}/head"]]
        problem: GitError | None = None
        for want in wants:
            try:
                self._mirrors.fetch(MIRROR_KEY, self.config.repo_url, want,
                                    auth=self.config.git_auth)  # fmt: skip
            except GitError as exc:
                problem = problem or exc
                continue
            if _is_commit(cycle.git, entry.revision):
                return
        raise LedgerError(
            f"app {name!r}: preview-deploy revision {entry.revision[:12]} could not be fetched"
            + (f" ({problem})" if problem else "")
        )


def repo_config(git: Git, sha: str, where: str, *, phase: str = "Held") -> RepoConfig:
    """``.sluice.yaml`` at ``sha``; a missing or bad file refuses with ``phase``."""
    raw = git.read_file(sha, REPO_CONFIG_FILE)
    if raw is None:
        raise Refused(f"{REPO_CONFIG_FILE} not found at {where}", phase)
    try:
        return parse_repo_config(raw, f"{REPO_CONFIG_FILE} at {where}")
    except ConfigError as exc:
        raise Refused(str(exc), phase) from None


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

"""``deploy_branch``: a branch only the bot moves, to approved revisions, for Argo CD or Flux.

Teams that keep Argo CD or Flux as their deployer point it at this branch instead of the
tracked one, so it only ever sees states that passed every gate. The rules:

* after a merge passes every gate and its ledger commit is written, the branch is
  fast-forwarded to the merge commit (the ledger commit is the audit record);
* it only ever moves to a commit reachable from the tracked branch (a merge), or back
  to an earlier ledger revision (``/rollback``, a force-with-lease push whose
  from/to the rollback's ledger entry records);
* a push is always leased on the tip Sluice read, so a concurrent move is never
  overwritten; a branch that diverged (someone pushed to it) is left alone and said so.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from datetime import datetime

from bot.forge.base import StatusState
from bot.gitops import GIT_TIMEOUT_S, Git, GitError, git_error_line, remote_env
from bot.report.words import made_line

_LOCAL_REF = "refs/sluice/deploy-branch/{branch}"


class DeployBranchError(RuntimeError):
    """The deploy branch was not moved; the message says why (no credentials in it)."""


@dataclass(frozen=True)
class BranchMove:
    branch: str
    before: str | None
    after: str
    push: str  # "fast-forward" | "force-with-lease" | "none"

    def record(self) -> dict[str, str | None]:
        """What a ledger entry says about the move."""
        return {"branch": self.branch, "from": self.before, "to": self.after, "push": self.push}

    def describe(self) -> str:
        if self.push == "none":
            return f"`{self.branch}` already at `{self.after[:12]}`"
        start = f"`{self.before[:12]}`" if self.before else "nothing (created)"
        return f"`{self.branch}` moved from {start} to `{self.after[:12]}` ({self.push})"


@dataclass
class DeployBranch:
    """The deploy branch of one repository, read and moved through the bot's mirror."""

    git: Git
    url: str
    auth: tuple[str, str] | None
    branch: str
    tracked: str

    def tip(self) -> str | None:
        """The branch's tip on the remote (fetched into the mirror), None if absent."""
        local = _LOCAL_REF.format(branch=self.branch)
        proc = self._remote(
            ["fetch", "--quiet", "--no-tags", self.url, f"+refs/heads/{self.branch}:{local}"]
        )
        if proc.returncode != 0:
            if "couldn't find remote ref" in proc.stderr.decode(errors="replace"):
                return None
            raise DeployBranchError(f"cannot read {self.branch}: {git_error_line(proc, self.url)}")
        return self.git.resolve(local)

    def plan_advance(self, target: str) -> BranchMove:
        """The fast-forward to ``target`` (a merge on the tracked branch), or why not."""
        tracked = f"refs/heads/{self.tracked}"
        try:
            reachable = self.git.is_ancestor(target, tracked)
        except GitError as exc:
            raise DeployBranchError(
                f"cannot check {target[:12]} against {self.tracked}: {exc}"
            ) from None
        if not reachable:
            raise DeployBranchError(
                f"{target[:12]} is not on {self.tracked}; {self.branch} only follows it"
            )
        before = self.tip()
        if before == target or (before is not None and self.git.is_ancestor(target, before)):
            return BranchMove(self.branch, before, before or target, "none")
        if before is not None and not self.git.is_ancestor(before, target):
            raise DeployBranchError(
                f"{self.branch} is at {before[:12]}, which is not behind {target[:12]}: someone "
                "else moved it; Sluice leaves it alone (protect the branch so only the bot pushes)"
            )
        return BranchMove(self.branch, before, target, "fast-forward")

    def plan_rollback(self, target: str, ledger_revisions: list[str]) -> BranchMove:
        """The move back to ``target``, which must be an earlier ledger revision."""
        if target not in ledger_revisions:
            raise DeployBranchError(f"{target[:12]} is not an earlier ledger revision")
        before = self.tip()
        if before == target:
            return BranchMove(self.branch, before, target, "none")
        return BranchMove(self.branch, before, target, "force-with-lease")

    def apply(self, move: BranchMove) -> None:
        """Push ``move``, leased on the tip it was planned from."""
        if move.push == "none":
            return
        lease = f"--force-with-lease=refs/heads/{self.branch}:{move.before or ''}"
        proc = self._remote(
            ["push", "--porcelain", lease, self.url, f"{move.after}:refs/heads/{self.branch}"]
        )
        if proc.returncode != 0:
            report = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
            if re.search(r"stale info|\[rejected\]", report):
                raise DeployBranchError(
                    f"{self.branch} moved while Sluice was moving it; not pushed"
                )
            raise DeployBranchError(
                f"git push of {self.branch} failed: {git_error_line(proc, self.url)}"
            )

    def _remote(self, args: list[str]) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                ["git", "-C", str(self.git.path), *args],
                capture_output=True,
                env=remote_env(self.auth),
                timeout=GIT_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise DeployBranchError(f"git {args[0]} of {self.branch} timed out") from None


def branch_for(git: Git, url: str, auth: tuple[str, str] | None, settings) -> DeployBranch | None:
    """The repository's deploy branch, None when ``deploy_branch`` is off."""
    if not settings.deploy_branch:
        return None
    return DeployBranch(git, url, auth, settings.deploy_branch, settings.tracked_branch)


def advance(branch: DeployBranch | None, merge: str, pinned: list[str]) -> tuple[bool, str | None]:
    """Fast-forward to an approved merge: (at the merge now, the line for the deploy comment)."""
    if branch is None:
        return False, None
    if pinned:
        shown = ", ".join(f"`{app}`" for app in pinned)
        return False, (f"Deploy branch `{branch.branch}` not moved: {shown} pinned by a rollback "
                       "until its revert merges.")  # fmt: skip
    try:
        move = branch.plan_advance(merge)
        branch.apply(move)
    except DeployBranchError as exc:
        return False, f"Deploy branch `{branch.branch}` not moved: {exc}."
    return True, f"Deploy branch {move.describe()}."


def plan_rollback(
    branch: DeployBranch | None, before: str, revisions: list[str]
) -> tuple[BranchMove | None, str | None]:
    """Where ``/rollback`` moves the branch: back to the newest ledger revision at or before
    ``before`` (the tracked branch just before the rolled-back merge, or ``--to``)."""
    if branch is None:
        return None, None
    git = branch.git
    candidates = sorted({r for r in revisions if git.is_ancestor(r, before)})
    newest = [c for c in candidates if all(git.is_ancestor(o, c) for o in candidates)]
    if not newest:
        return None, (f"Deploy branch `{branch.branch}` not moved: no ledger revision "
                      f"precedes {before[:12]}")  # fmt: skip
    try:
        return branch.plan_rollback(newest[0], revisions), None
    except DeployBranchError as exc:
        return None, f"Deploy branch `{branch.branch}` not moved: {exc}."


def apply_rollback(branch: DeployBranch | None, move: BranchMove | None) -> tuple[bool, str | None]:
    """Push a planned rollback move: (the branch is at the target now, the line to report)."""
    if branch is None or move is None:
        return False, None
    try:
        branch.apply(move)
    except DeployBranchError as exc:
        return False, f"Deploy branch `{branch.branch}` not moved: {exc}."
    return True, f"Deploy branch {move.describe()}."


def engine_apps(apps: list[str]) -> list[str]:
    """Apps discovered from Argo CD / Flux manifests: their engine deploys them, not the puller."""
    return [app for app in apps if app.startswith(("argocd:", "flux:"))]


def engine_handoff(
    branch: DeployBranch | None, moved: bool, ledger_commit: str
) -> tuple[StatusState, str]:
    """The ``sluice/deploy/<app>`` status (state, text) of an app Argo CD or Flux deploys."""
    approved = f"approved in ledger {ledger_commit[:12]}"
    if branch is None:
        return "failure", f"{approved}, but deploy_branch is off: nothing deploys it"
    if not moved:
        return "failure", f"{approved}, but {branch.branch} was not moved (see the PR)"
    return "success", f"{approved}; its engine deploys {branch.branch}"


def engine_comment(
    merge: str, ledger_commit: str, apps: list[str], notes: list[str], now: datetime
) -> str:
    shown = ", ".join(f"`{app}`" for app in apps)
    lines = [f"### 🚀 Sluice deploy of `{merge[:12]}`", "",
             f"Approved {shown} in ledger commit `{ledger_commit[:12]}`."]  # fmt: skip
    return "\n".join([*lines, *(f"- {note}" for note in notes), "", made_line(now)])

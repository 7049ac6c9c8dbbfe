"""``/rollback``: put earlier revisions back in the ledger, open the revert PR, pin the apps."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bot.config.server import RepoSettings
from bot.deploy.comments import deploy_comment, outcomes_line
from bot.deploy.deploy_branch import (
    apply_rollback,
    branch_for,
    engine_apps,
    engine_handoff,
    plan_rollback,
)
from bot.deploy.desk import DeployDesk, names
from bot.deploy.follow import PullerFollower
from bot.deploy.ledger import Ledger, LedgerEntry
from bot.deploy.ledger_writer import LedgerWriter, http_url
from bot.deploy.pins import Pin, repo_key
from bot.forge.base import Forge, ForgeError, PullRequest
from bot.gitops import GIT_TIMEOUT_S, Git, GitError, git_error_line, remote_env
from bot.preview import repo_app_names
from bot.report.escape import code, one_line

REVERT_BRANCH = "sluice/revert-{number}"


@dataclass
class Rollback:
    """The ``/rollback`` command: ledger entries, the revert pull request and the pins."""

    desk: DeployDesk

    def rollback(
        self,
        forge: Forge,
        pr: PullRequest,
        actor: str,
        apps: tuple[str, ...] = (),
        to_rev: str | None = None,
    ) -> str:
        """``/rollback [app…] [--to REV]`` on a merged PR: the reply text."""
        desk = self.desk
        if pr.state != "merged" or not pr.merge_sha:
            return "`/rollback` works on a merged pull request; this one is not merged."
        settings = desk.settings(pr.repo)
        git = desk.mirror(forge, pr.repo, settings, [pr.merge_sha])
        writer = LedgerWriter(desk)
        ledger = writer.open(forge, git, pr.repo, settings)
        # Apps of .sluice.yaml and those discovered from Argo CD / Flux manifests.
        tracked = git.resolve(f"refs/heads/{settings.tracked_branch}")
        known = repo_app_names(git, tracked, desk.cache_dir, settings.repo_urls)
        unknown = [a for a in apps if a not in known]
        if unknown:
            return f"`/rollback`: no app named {names(unknown)} in `.sluice.yaml`."
        targets = list(apps) or [a for a in known if _deployed_by(ledger, a, pr) is not None]
        if not targets:
            return f"`/rollback`: #{pr.number} deployed no app, so there is nothing to roll back."
        plan: dict[str, str] = {}
        problems: list[str] = []
        for app in targets:
            target, problem = _rollback_target(git, ledger, app, pr, to_rev)
            if problem:
                problems.append(problem)
            else:
                assert target is not None
                plan[app] = target
        if problems:
            return "`/rollback` refused, nothing was changed:\n" + "\n".join(
                f"- {p}" for p in problems
            )
        key = repo_key(pr.repo.forge, pr.repo.full_name)
        branch = branch_for(git, pr.repo.clone_url, forge.clone_auth(pr.repo), settings)
        # The repo-wide branch goes back to where it stood before the rolled-back merge.
        before = next(iter(plan.values())) if to_rev else git.resolve(f"{pr.merge_sha}^1")
        revisions = [e.revision for app in known for _, e in ledger.history(app, limit=200)]
        move, branch_note = plan_rollback(branch, before, revisions)
        with desk.locks.hold(key, targets):
            gates: dict = {"rollback_of": pr.merge_sha, "requested_by": actor}
            if move is not None:  # the force-with-lease push this entry records
                gates["deploy_branch"] = move.record()
            entries = [
                LedgerEntry(app=app, revision=rev, action="rollback", pr=pr.number,
                            pr_url=http_url(pr.url), approved_by=[actor], gates=gates)
                for app, rev in plan.items()
            ]  # fmt: skip
            ledger_commit = writer.record(
                forge, pr, ledger, entries, status_sha=pr.merge_sha, name_revision=False
            )
            moved, applied = apply_rollback(branch, move)
            branch_note = applied or branch_note
            handed = engine_apps(targets)  # Argo CD / Flux deploy them from deploy_branch
            state, why = engine_handoff(branch, moved, ledger_commit)
            for app in handed:
                desk.status(forge, pr.repo, pr.merge_sha, app, state, why)
            revert, revert_problem = self._open_revert(forge, git, pr, settings)
            for app, rev in plan.items():
                desk.pins.pin(Pin(key, app, pr.number, revert.number if revert else None, rev,
                                  actor, desk.clock().strftime("%Y-%m-%dT%H:%M:%SZ")))  # fmt: skip
            notes = [f"`{app}` → {code(rev[:12])}" for app, rev in plan.items()]
            if branch_note:
                notes.append(branch_note)
            if revert is not None:
                notes.append(f"Opened the revert pull request #{revert.number} ({revert.url}); "
                             f"{names(targets)} stay pinned until it merges.")  # fmt: skip
            else:
                notes.append(f"Could not open a revert pull request: {revert_problem}. "
                             f"{names(targets)} stay pinned; revert #{pr.number} by hand.")  # fmt: skip
            outcomes = PullerFollower(desk).follow(
                forge, pr, ledger_commit, [a for a in targets if a not in handed],
                status_sha=pr.merge_sha, notes=notes,
                heading=f"### ⏪ Sluice rollback of #{pr.number} requested by {code(actor)}",
                post=False,
            )  # fmt: skip
        revert_text = (
            f"revert PR #{revert.number}: {revert.url}"
            if revert
            else f"no revert PR ({revert_problem})"
        )
        return (
            f"`/rollback`: {', '.join(f'{code(a)} → {code(r[:12])}' for a, r in plan.items())} "
            f"in ledger commit {code(ledger_commit[:12])}; {revert_text}; "
            f"pinned until the revert merges; {outcomes_line(outcomes)}\n\n"
            + deploy_comment("", "", outcomes, notes).strip()
        )

    def _open_revert(
        self, forge: Forge, git: Git, pr: PullRequest, settings: RepoSettings
    ) -> tuple[PullRequest | None, str]:
        """A revert of the merge commit on top of the tracked branch, as a new PR."""
        assert pr.merge_sha is not None
        branch = REVERT_BRANCH.format(number=pr.number)
        try:
            sha = self._revert_commit(git, pr.merge_sha, f"refs/heads/{settings.tracked_branch}")
            _push(git, pr.repo.clone_url, forge.clone_auth(pr.repo), f"+{sha}:refs/heads/{branch}")
        except GitError as exc:
            return None, str(exc)
        body = (
            f"Sluice rolled back the deploy of #{pr.number} ({pr.merge_sha[:12]}). Merging this "
            f"revert brings `{settings.tracked_branch}` back in line with what runs, and unpins "
            "the apps: until then later merges that touch them are held."
        )
        try:
            revert = forge.create_pull_request(
                pr.repo, branch, settings.tracked_branch, f"Revert #{pr.number}: {pr.title}", body
            )
        except ForgeError as exc:
            return None, str(exc)
        return revert, ""

    def _revert_commit(self, git: Git, merge: str, onto: str) -> str:
        """A revert of ``merge`` on ``onto``, signed by the bot, made in a throwaway worktree."""
        signer = self.desk.signer
        parents = git.run("rev-list", "--parents", "-n1", merge).decode().split()[1:]
        env = {**os.environ, **signer.environment(), "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="sluice-revert-") as tmp:
            tree = Path(tmp) / "worktree"
            git.run("worktree", "add", "--quiet", "--detach", str(tree), git.resolve(onto))
            try:
                args = [*signer.git_options(), "revert", "--no-edit", "-S"]
                if len(parents) > 1:
                    args += ["-m", "1"]
                proc = subprocess.run(
                    ["git", "-C", str(tree), *args, merge],
                    capture_output=True,
                    env=env,
                    timeout=GIT_TIMEOUT_S,
                )
                if proc.returncode != 0:
                    raise GitError(f"the revert of {merge[:12]} does not apply cleanly on the "
                                   f"tracked branch ({git_error_line(proc)})")  # fmt: skip
                return Git(tree).resolve("HEAD")
            finally:
                git.run("worktree", "remove", "--force", str(tree), check=False)
                git.run("worktree", "prune", check=False)


def _rollback_target(
    git: Git, ledger: Ledger, app: str, pr: PullRequest, to_rev: str | None
) -> tuple[str | None, str | None]:
    """The revision ``app`` rolls back to, or why it cannot."""
    history = ledger.history(app, limit=200)
    current = history[0][1] if history else None
    if to_rev is not None:
        earlier = [e.revision for _, e in history[1:]]
        sha = _resolve_revision(git, to_rev, earlier)
        shown = code(one_line(to_rev)[:80])
        if current is not None and sha == current.revision:
            return None, f"{code(app)} already runs {shown}"
        if sha is None or sha not in earlier:
            return None, (f"{shown} was never deployed for {code(app)}: `--to` must name an "
                          "earlier revision in the app's ledger history")  # fmt: skip
        return sha, None
    deployed = _deployed_by(ledger, app, pr)
    if deployed is None:
        return None, f"#{pr.number} never deployed {code(app)}"
    if deployed.previous is None:
        return None, (f"nothing was deployed for {code(app)} before #{pr.number}; "
                      "use `--to REV` with an earlier ledger revision")  # fmt: skip
    if current is not None and current.revision == deployed.previous:
        return None, f"{code(app)} already runs {code(deployed.previous[:12])}"
    return deployed.previous, None


def _resolve_revision(git: Git, rev: str, known: list[str]) -> str | None:
    """``rev`` as a full SHA: resolved in the mirror, else a unique prefix of a known one."""
    try:
        return git.resolve(rev)
    except GitError:
        wanted = rev.strip().lower()
        matches = {sha for sha in known if len(wanted) >= 7 and sha.startswith(wanted)}
        return matches.pop() if len(matches) == 1 else None


def _deployed_by(ledger: Ledger, app: str, pr: PullRequest) -> LedgerEntry | None:
    for _, entry in ledger.history(app, limit=200):
        if entry.pr == pr.number and entry.action == "deploy" and entry.revision == pr.merge_sha:
            return entry
    return None


def _push(git: Git, url: str, auth: tuple[str, str] | None, refspec: str) -> None:
    proc = subprocess.run(
        ["git", "-C", str(git.path), "push", "--quiet", url, refspec],
        capture_output=True,
        env=remote_env(auth),
        timeout=GIT_TIMEOUT_S,
    )
    if proc.returncode != 0:
        detail = git_error_line(proc)
        if "://" in url and "@" in url:  # never echo credentials embedded in a URL
            detail = detail.replace(url.split("://", 1)[1].split("@", 1)[0], "***")
        raise GitError(f"git push of the revert branch failed: {detail}")

"""Writing the ledger: fetch its branch, record signed entries, push, log what was written."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config.server import RepoSettings
from bot.deploy.desk import DeployDesk
from bot.deploy.ledger import Ledger, LedgerEntry, LedgerError
from bot.deploy.pins import DeployRecord, repo_key
from bot.errors import RetryableError
from bot.forge.base import Forge, PullRequest, RepoRef
from bot.gitops import Git, GitError
from bot.report.escape import one_line


@dataclass
class LedgerWriter:
    """The bot's pen on the ledger branch of a repository's mirror."""

    desk: DeployDesk

    def open(self, forge: Forge, git: Git, repo: RepoRef, settings: RepoSettings) -> Ledger:
        """The ledger as the remote has it now (its branch may not exist yet)."""
        ref = f"refs/heads/{settings.ledger_branch}"
        try:
            self.desk.mirrors.fetch(f"{forge.name}-{repo.full_name}", repo.clone_url, [ref],
                                    auth=forge.clone_auth(repo))  # fmt: skip
        except GitError as exc:
            if "couldn't find remote ref" not in str(exc):
                raise RetryableError(str(exc)) from None
        return Ledger(git, settings.ledger_branch)

    def record(
        self,
        forge: Forge,
        pr: PullRequest,
        ledger: Ledger,
        entries: list[LedgerEntry],
        *,
        status_sha: str,
        name_revision: bool = True,
    ) -> str:
        """Sign and push ONE ledger commit with ``entries`` for ``pr``; log it; its SHA.

        ``status_sha`` is where the deploy log says the PR's statuses go; the commit
        message names it too unless ``name_revision`` is False (a rollback names none).
        """
        action = entries[0].action
        apps = [e.app for e in entries]
        signer = self.desk.signer
        before = ledger.tip()
        try:
            ledger.record(
                entries, signer, _message(action, apps, status_sha if name_revision else None, pr)
            )
            # Fenced: a replica that lost an app's deploy lock must not push.
            self.desk.locks.check(repo_key(pr.repo.forge, pr.repo.full_name), apps)
            ledger.push(pr.repo.clone_url, forge.clone_auth(pr.repo), signer=signer)
        except LedgerError as exc:
            _forget_unpushed(ledger, before)
            raise RetryableError(f"ledger: {exc}") from None
        except RetryableError:
            _forget_unpushed(ledger, before)
            raise
        tip = ledger.tip()
        assert tip is not None
        self.desk.deploy_log.add([_log_record(pr, tip, app, status_sha, action) for app in apps])
        return tip

    @staticmethod
    def writer(ledger: Ledger, app: str) -> str:
        """The ledger commit that wrote ``app``'s current entry."""
        history = ledger.history(app, limit=1)
        if not history:
            raise LedgerError(f"the ledger has no entry for {app}")
        return history[0][0]


def _forget_unpushed(ledger: Ledger, tip: str | None) -> None:
    """Drop a ledger commit the remote never got from the mirror's branch: the retry would
    take it for the deploy already recorded and deploy nothing."""
    if tip is None:
        ledger.git.run("update-ref", "-d", ledger.ref, check=False)
    else:
        ledger.git.run("update-ref", ledger.ref, tip)


def http_url(url: str) -> str | None:
    return url if url.startswith(("https://", "http://")) else None


def _log_record(pr: PullRequest, ledger_commit: str, app: str, sha: str, action: str):
    return DeployRecord(
        ledger_commit=ledger_commit,
        app=app,
        forge=pr.repo.forge,
        repo=pr.repo.full_name,
        clone_url=pr.repo.clone_url,
        project_id=pr.repo.project_id,
        pr=pr.number,
        status_sha=sha,
        action=action,
    )


def _message(action: str, apps: list[str], sha: str | None, pr: PullRequest) -> str:
    what = f" at {sha[:12]}" if sha else ""
    title = one_line(pr.title)[:200]
    return f"{action} {', '.join(apps)}{what} (#{pr.number})\n\n{title}\n"

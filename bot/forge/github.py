"""The GitHub backend of ``Forge``, on PyGithub.

PyGithub's own pacing (0.25 s before every request, 1 s before every write) and
its urllib3 retries are switched off: ``Retrier`` owns retries, so that 5xx, 429,
secondary rate limits, timeouts and dropped connections are all retried the same
way and the server's Retry-After / X-RateLimit-Reset are honoured, and
``WritePacer`` keeps content writes under GitHub's limit (about 80 a minute).

Authentication is a token (PAT or installation token) or a GitHub App: with an
installation id the app acts as that installation; without one the installation
is looked up per repository (``GET /repos/{owner}/{repo}/installation``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import requests
from github.GithubException import GithubException, RateLimitExceededException

from bot.forge.base import (
    Approval,
    Comment,
    Forge,
    ForgeError,
    Permission,
    PullRequest,
    RepoRef,
    StatusState,
)
from bot.forge.calls import ForgeCalls, truncate
from bot.forge.github_auth import GitHubClients
from bot.forge.github_values import PER_PAGE, comment, permission, pull_request, repo_path
from bot.forge.retry import Retrier, TransientError, WritePacer, wait_hint

T = TypeVar("T")

STATUS_DESCRIPTION_LIMIT = 140
REACTIONS = frozenset({"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"})
# GitHub's pull request files listing stops here; beyond it the list is incomplete.
MAX_LISTED_FILES = 3000
# Review states that change a reviewer's standing; COMMENTED and PENDING do not.
STANDING_REVIEW_STATES = frozenset({"APPROVED", "CHANGES_REQUESTED", "DISMISSED"})
# Docs: on a secondary rate limit without Retry-After, wait at least a minute.
SECONDARY_LIMIT_WAIT_S = 60.0


class GitHubForge(Forge):
    name = "github"

    def __init__(
        self,
        *,
        base_url: str,
        token: str | None = None,
        app_id: int | None = None,
        private_key: str | None = None,
        installation_id: int | None = None,
        timeout_s: float = 10,
        write_pacer: WritePacer | None = None,
        retrier: Retrier | None = None,
    ) -> None:
        self._clients = GitHubClients(
            base_url=base_url,
            token=token,
            app_id=app_id,
            private_key=private_key,
            installation_id=installation_id,
            timeout_s=timeout_s,
        )
        self._token = self._clients.token
        self._pacer = write_pacer or WritePacer()
        self._calls = ForgeCalls(retrier or Retrier(), self._pacer, self._token, "***")
        self._login: str | None = None

    # -- Forge -------------------------------------------------------------------

    def bot_login(self) -> str:
        if self._login is None:
            self._login = self._call("read the bot's login", self._fetch_login)
        return self._login

    def get_pull_request(self, repo: RepoRef, number: int) -> PullRequest:
        path = f"{repo_path(repo)}/pulls/{int(number)}"
        data = self._call(
            f"read pull request {repo.full_name}#{number}",
            lambda: self._get(repo, path),
        )
        return pull_request(repo, data)

    def changed_files(self, pr: PullRequest) -> list[str]:
        def fetch() -> list[str]:
            pull = self._clients.client(pr.repo).get_repo(pr.repo.full_name).get_pull(pr.number)
            names: dict[str, None] = {}
            count = 0
            for changed in pull.get_files():
                count += 1
                # A rename touches both paths: apps watching either are affected.
                if changed.previous_filename:
                    names[changed.previous_filename] = None
                names[changed.filename] = None
            if count >= MAX_LISTED_FILES and pull.changed_files > count:
                raise ForgeError(
                    f"{pr.repo.full_name}#{pr.number} changes {pull.changed_files} files; "
                    f"GitHub lists only {count}",
                )
            return list(names)

        return self._call(f"list files of {pr.repo.full_name}#{pr.number}", fetch)

    def list_comments(self, pr: PullRequest) -> list[Comment]:
        def fetch() -> list[Comment]:
            issue = self._clients.client(pr.repo).get_repo(pr.repo.full_name).get_issue(pr.number)
            return [
                Comment(
                    id=c.id,
                    author=c.user.login if c.user else "",
                    body=c.body or "",
                    url=c.html_url or "",
                )
                for c in issue.get_comments()
            ]

        return self._call(f"list comments of {pr.repo.full_name}#{pr.number}", fetch)

    def create_comment(self, pr: PullRequest, body: str) -> Comment:
        path = f"{repo_path(pr.repo)}/issues/{int(pr.number)}/comments"
        data = self._call(
            f"comment on {pr.repo.full_name}#{pr.number}",
            lambda: self._write(pr.repo, "POST", path, {"body": body}),
        )
        return comment(data)

    def edit_comment(self, pr: PullRequest, comment_id: int, body: str) -> Comment:
        path = f"{repo_path(pr.repo)}/issues/comments/{int(comment_id)}"
        data = self._call(
            f"edit comment {comment_id} on {pr.repo.full_name}",
            lambda: self._write(pr.repo, "PATCH", path, {"body": body}),
        )
        return comment(data)

    def list_commit_comments(self, repo: RepoRef, sha: str) -> list[Comment]:
        path = f"{repo_path(repo)}/commits/{quote(sha, safe='')}/comments"
        items = self._call(
            f"list comments on {repo.full_name}@{sha[:12]}", lambda: self._get_all(repo, path)
        )
        return [comment(item) for item in items]

    def create_commit_comment(self, repo: RepoRef, sha: str, body: str) -> Comment:
        path = f"{repo_path(repo)}/commits/{quote(sha, safe='')}/comments"
        data = self._call(
            f"comment on {repo.full_name}@{sha[:12]}",
            lambda: self._write(repo, "POST", path, {"body": body}),
        )
        return comment(data)

    def edit_commit_comment(
        self, repo: RepoRef, sha: str, comment_id: int, body: str
    ) -> Comment | None:
        path = f"{repo_path(repo)}/comments/{int(comment_id)}"
        data = self._call(
            f"edit commit comment {comment_id} on {repo.full_name}",
            lambda: self._write(repo, "PATCH", path, {"body": body}),
        )
        return comment(data)

    def set_status(
        self,
        repo: RepoRef,
        sha: str,
        context: str,
        state: StatusState,
        description: str,
        target_url: str | None = None,
    ) -> None:
        if state not in ("pending", "success", "failure", "error"):
            raise ValueError(f"unknown commit status state {state!r}")
        status: dict[str, Any] = {
            "state": state,
            "context": context,
            "description": truncate(description, STATUS_DESCRIPTION_LIMIT),
        }
        if target_url:
            status["target_url"] = target_url
        commit = quote(sha, safe="")

        def post() -> None:
            # Statuses are append-only on GitHub; skipping an identical repeat saves a
            # content write (the scarce resource) on re-runs and webhook redeliveries.
            current = self._get(repo, f"{repo_path(repo)}/commits/{commit}/status")
            for existing in current.get("statuses") or []:
                if existing.get("context") == context and all(
                    existing.get(key) == value for key, value in status.items()
                ):
                    return
            self._write(repo, "POST", f"{repo_path(repo)}/statuses/{commit}", status)

        self._call(f"set status {context!r} on {repo.full_name}@{sha[:12]}", post)

    def add_reaction(self, pr: PullRequest, comment_id: int, reaction: str) -> None:
        if reaction not in REACTIONS:
            raise ValueError(f"GitHub has no reaction {reaction!r}; use one of {sorted(REACTIONS)}")
        path = f"{repo_path(pr.repo)}/issues/comments/{int(comment_id)}/reactions"
        self._call(
            f"react to comment {comment_id} on {pr.repo.full_name}",
            lambda: self._write(pr.repo, "POST", path, {"content": reaction}),
        )

    def permission(self, repo: RepoRef, user: str) -> Permission:
        path = f"{repo_path(repo)}/collaborators/{quote(user, safe='')}/permission"

        def fetch() -> Permission:
            try:
                data = self._get(repo, path)
            except GithubException as exc:
                if exc.status == 404:
                    return Permission.NONE
                raise
            return permission(data)

        return self._call(f"read {user}'s permission on {repo.full_name}", fetch)

    def is_member(self, repo: RepoRef, team: str, user: str) -> bool:
        org, slash, slug = team.partition("/")
        if not org or not slash or not slug or "/" in slug:
            raise ValueError(f"GitHub team must be 'org/team-slug', got {team!r}")
        path = (
            f"/orgs/{quote(org, safe='')}/teams/{quote(slug, safe='')}"
            f"/memberships/{quote(user, safe='')}"
        )

        def fetch() -> bool:
            try:
                data = self._get(repo, path)
            except GithubException as exc:
                if exc.status == 404:
                    return False
                raise
            # A pending invitation is not membership.
            return data.get("state") == "active"

        return self._call(f"check {user} in team {team}", fetch)

    def clone_auth(self, repo: RepoRef) -> tuple[str, str]:
        if self._token is not None:
            return ("x-access-token", self._token)

        def token() -> str:
            installation_id = self._clients.installation_for(repo)
            return self._clients.installation_auth(installation_id).token

        return ("x-access-token", self._call(f"get a token for {repo.full_name}", token))

    def approvals(self, pr: PullRequest) -> list[Approval]:
        path = f"{repo_path(pr.repo)}/pulls/{int(pr.number)}/reviews"

        def fetch() -> list[Approval]:
            # Reviews come oldest first; a reviewer's latest standing review counts.
            standing: dict[str, dict[str, Any]] = {}
            for review in self._get_all(pr.repo, path):
                login = (review.get("user") or {}).get("login")
                if login and review.get("state") in STANDING_REVIEW_STATES:
                    standing[login.lower()] = review
            return [
                Approval(user=review["user"]["login"], sha=review.get("commit_id") or "")
                for review in standing.values()
                if review["state"] == "APPROVED"
            ]

        return self._call(f"list reviews of {pr.repo.full_name}#{pr.number}", fetch)

    def create_pull_request(
        self, repo: RepoRef, head_branch: str, base_branch: str, title: str, body: str
    ) -> PullRequest:
        path = f"{repo_path(repo)}/pulls"
        request = {"title": title, "head": head_branch, "base": base_branch, "body": body}
        data = self._call(
            f"open a pull request {head_branch} -> {base_branch} in {repo.full_name}",
            lambda: self._write(repo, "POST", path, request),
        )
        return pull_request(repo, data)

    def open_pull_requests(self, repo: RepoRef, base_branch: str) -> list[PullRequest]:
        path = f"{repo_path(repo)}/pulls"
        params = {"state": "open", "base": base_branch}
        items = self._call(
            f"list open pull requests into {base_branch} of {repo.full_name}",
            lambda: self._get_all(repo, path, params),
        )
        return [pull_request(repo, item) for item in items]

    # -- plumbing ------------------------------------------------------------------

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` under the retrier, mapping client errors to Transient/ForgeError."""

        def attempt() -> T:
            try:
                return fn()
            except GithubException as exc:
                raise _translate(operation, exc, self._calls.scrub) from None
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                raise TransientError(
                    f"{operation}: {_connection_problem(exc)}", status=None
                ) from None

        return self._calls.run(operation, attempt)

    def _get(self, repo: RepoRef | None, path: str) -> Any:
        _, data = self._clients.client(repo).requester.requestJsonAndCheck("GET", path)
        return data

    def _get_all(self, repo: RepoRef, path: str, params: dict[str, str] | None = None) -> list[Any]:
        """Every item of a paginated list, following the ``Link: rel="next"`` headers."""
        requester = self._clients.client(repo).requester
        items: list[Any] = []
        url: str | None = path
        query: dict[str, Any] | None = {**(params or {}), "per_page": PER_PAGE}
        while url is not None:
            headers, data = requester.requestJsonAndCheck("GET", url, parameters=query)
            items.extend(data or [])
            links = requests.utils.parse_header_links(headers.get("link", ""))
            url = next((link["url"] for link in links if link.get("rel") == "next"), None)
            query = None  # the next link carries the query
        return items

    def _write(self, repo: RepoRef, verb: str, path: str, body: dict[str, Any]) -> Any:
        with self._pacer.slot():
            _, data = self._clients.client(repo).requester.requestJsonAndCheck(
                verb, path, input=body
            )
        return data

    def _fetch_login(self) -> str:
        if self._clients.app_auth is None:
            return str(self._get(None, "/user")["login"])
        # Installation tokens cannot read /user; an app posts as "<slug>[bot]".
        return f"{self._clients.integration().get_app().slug}[bot]"


def _translate(operation: str, exc: GithubException, scrub: Callable[[str], str]) -> Exception:
    """A PyGithub error as TransientError (worth a retry) or ForgeError."""
    headers = {k: str(v) for k, v in (exc.headers or {}).items()}
    message = scrub(_server_message(exc))
    status = exc.status
    limited = isinstance(exc, RateLimitExceededException) or (
        status == 403 and headers.get("x-ratelimit-remaining") == "0"
    )
    if status >= 500 or status == 429 or limited:
        hint = wait_hint(headers)
        if hint is None and (status == 429 or limited):
            hint = SECONDARY_LIMIT_WAIT_S
        return TransientError(
            f"{operation}: GitHub answered {status}: {message}", status=status, wait_s=hint
        )
    return ForgeError(f"{operation}: GitHub answered {status}: {message}", status=status)


def _server_message(exc: GithubException) -> str:
    data = exc.data
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"]
    return exc.message or "no message"


def _connection_problem(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broke mid-answer"
    return "connection failed"

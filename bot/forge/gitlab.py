"""The GitLab backend of ``Forge``, on python-gitlab (gitlab.com or self-managed).

python-gitlab's own retries are off: it sleeps inside the call on 429 and exposes no
response headers on errors. A ``requests`` response hook turns every 5xx and 429
into ``TransientError`` (carrying ``Retry-After``) before python-gitlab sees it, so
``Retrier`` owns all waiting and the backend stays testable with a fake sleep.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import gitlab
import requests
from gitlab.exceptions import GitlabAuthenticationError, GitlabError
from gitlab.v4.objects import Project, ProjectMergeRequest

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
from bot.forge.calls import ForgeCalls
from bot.forge.gitlab_values import (
    access_level_permission,
    already_pending,
    commit_comment,
    describe,
    is_plain_not_found,
    normalize_url,
    note_comment,
    paths,
    pull_request,
)
from bot.forge.retry import Retrier, TransientError, WritePacer, wait_hint

T = TypeVar("T")

_STATUS_STATES: dict[str, str] = {
    "pending": "pending",
    "success": "success",
    "failure": "failed",
    "error": "failed",
}
_EMOJI: dict[str, str] = {
    "eyes": "eyes",
    "+1": "thumbsup",
    "-1": "thumbsdown",
    "confused": "confused",
    "rocket": "rocket",
}
_GUEST = 10
_PAGE = 100


class GitLabForge(Forge):
    name = "gitlab"

    def __init__(
        self,
        *,
        url: str,
        token: str,
        timeout_s: float = 10,
        write_pacer: WritePacer | None = None,
        retrier: Retrier | None = None,
    ) -> None:
        if not token:
            raise ValueError("GitLab token is empty")
        self.url = normalize_url(url)
        self._token = token
        self._timeout_s = timeout_s
        self._calls = ForgeCalls(
            retrier or Retrier(), write_pacer or WritePacer(), token, "[token]"
        )
        self._login: str | None = None
        session = requests.Session()
        session.hooks["response"].append(_raise_transient)
        self._gl = gitlab.Gitlab(
            self.url,
            private_token=token,
            timeout=timeout_s,
            retry_transient_errors=False,
            per_page=_PAGE,
            # Rewrite pagination links onto our base URL: the token must never follow a
            # Link header to another host (a misconfigured external_url, or worse).
            keep_base_url=True,
            session=session,
        )

    # -- Forge

    def bot_login(self) -> str:
        if self._login is None:
            self._login = self._call("get current user", self._current_username)
        return self._login

    def get_pull_request(self, repo: RepoRef, number: int) -> PullRequest:
        def fetch() -> PullRequest:
            project = self._project(repo)
            mr = project.mergerequests.get(number)
            return self._pull_request(repo, project, mr)

        return self._call(f"get merge request !{number}", fetch)

    def changed_files(self, pr: PullRequest) -> list[str]:
        def fetch() -> list[str]:
            try:
                diffs = self._gl.http_list(
                    f"{self._mr_path(pr)}/diffs", get_all=True, per_page=_PAGE
                )
            except GitlabError as exc:
                if exc.response_code != 404:
                    raise
                diffs = self._changes_before_15_7(pr)
            return paths(diffs)

        return self._call(f"list changed files of !{pr.number}", fetch)

    def list_comments(self, pr: PullRequest) -> list[Comment]:
        def fetch() -> list[Comment]:
            notes = self._mr(pr).notes.list(get_all=True, sort="asc", order_by="created_at")
            # Pages can shift while notes are added; dedupe and order by id (creation order).
            unique = {n.id: n for n in notes if not n.system}
            return [note_comment(pr, unique[i].attributes) for i in sorted(unique)]

        return self._call(f"list notes of !{pr.number}", fetch)

    def create_comment(self, pr: PullRequest, body: str) -> Comment:
        def create() -> Comment:
            note = self._mr(pr).notes.create({"body": body})
            return note_comment(pr, note.attributes)

        return self._call(f"create note on !{pr.number}", create, write=True)

    def edit_comment(self, pr: PullRequest, comment_id: int, body: str) -> Comment:
        def edit() -> Comment:
            result = self._mr(pr).notes.update(comment_id, {"body": body})
            return note_comment(pr, result)

        return self._call(f"edit note {comment_id} on !{pr.number}", edit, write=True)

    def list_commit_comments(self, repo: RepoRef, sha: str) -> list[Comment]:
        def fetch() -> list[Comment]:
            commit = self._project(repo).commits.get(sha, lazy=True)
            notes = commit.comments.list(get_all=True)
            return [commit_comment(repo, sha, n.attributes) for n in notes]

        return self._call(f"list comments on {sha[:12]}", fetch)

    def create_commit_comment(self, repo: RepoRef, sha: str, body: str) -> Comment:
        def create() -> Comment:
            commit = self._project(repo).commits.get(sha, lazy=True)
            note = commit.comments.create({"note": body})
            return commit_comment(repo, sha, note.attributes)

        return self._call(f"comment on {sha[:12]}", create, write=True)

    def edit_commit_comment(
        self, repo: RepoRef, sha: str, comment_id: int, body: str
    ) -> Comment | None:
        # The commit comments API has no id and no update; the comment stands.
        return None

    def set_status(
        self,
        repo: RepoRef,
        sha: str,
        context: str,
        state: StatusState,
        description: str,
        target_url: str | None = None,
    ) -> None:
        if state not in _STATUS_STATES:
            raise ValueError(f"unknown status state {state!r}")
        data = {"state": _STATUS_STATES[state], "name": context, "description": description}
        if target_url:
            data["target_url"] = target_url

        def post() -> None:
            commit = self._project(repo).commits.get(sha, lazy=True)
            try:
                commit.statuses.create(data)
            except GitlabError as exc:
                if not already_pending(exc, data["state"]):
                    raise

        self._call(f"set status {context} on {sha[:12]}", post, write=True)

    def add_reaction(self, pr: PullRequest, comment_id: int, reaction: str) -> None:
        if reaction not in _EMOJI:
            raise ValueError(f"unsupported reaction {reaction!r}")
        emoji = _EMOJI[reaction]
        me = self.bot_login()

        def award() -> None:
            note = self._mr(pr).notes.get(comment_id, lazy=True)
            if _has_award(note, emoji, me):
                return
            try:
                note.awardemojis.create({"name": emoji})
            except GitlabError as exc:
                # GitLab answers 404 for an emoji this user already awarded (a race, or
                # a retry after the first POST succeeded but its answer was lost).
                if exc.response_code == 404 and _has_award(note, emoji, me):
                    return
                raise

        self._call(f"award {emoji} on note {comment_id}", award, write=True)

    def permission(self, repo: RepoRef, user: str) -> Permission:
        def lookup() -> Permission:
            user_id = self._user_id(user)
            if user_id is None:
                return Permission.NONE
            try:
                member = self._project(repo).members_all.get(user_id)
            except GitlabError as exc:
                if exc.response_code == 404 and is_plain_not_found(exc):
                    return Permission.NONE
                raise
            return access_level_permission(member.access_level)

        return self._call(f"look up {user}'s access to {repo.full_name}", lookup)

    def is_member(self, repo: RepoRef, team: str, user: str) -> bool:
        group_path = team.strip().lstrip("@").strip("/")
        if not group_path:
            raise ValueError("empty GitLab group path")

        def lookup() -> bool:
            user_id = self._user_id(user)
            if user_id is None:
                return False
            group = self._gl.groups.get(group_path, lazy=True)
            try:
                member = group.members_all.get(user_id)
            except GitlabError as exc:
                if exc.response_code == 404 and is_plain_not_found(exc):
                    return False
                raise
            return int(member.access_level) >= _GUEST

        return self._call(f"check {user} in group {group_path}", lookup)

    def clone_auth(self, repo: RepoRef) -> tuple[str, str]:
        return "oauth2", self._token

    def approvals(self, pr: PullRequest) -> list[Approval]:
        def fetch() -> list[Approval]:
            project = self._project(pr.repo)
            before = project.mergerequests.get(pr.number).sha
            state = project.mergerequests.get(pr.number, lazy=True).approvals.get()
            after = project.mergerequests.get(pr.number).sha
            if before != after:
                # A push landed between the reads: we cannot tell which head was approved.
                raise TransientError(f"!{pr.number} moved on while its approvals were read")
            return [
                Approval(user=entry["user"]["username"], sha=str(after))
                for entry in state.attributes.get("approved_by") or []
            ]

        return self._call(f"list approvals of !{pr.number}", fetch)

    def create_pull_request(
        self, repo: RepoRef, head_branch: str, base_branch: str, title: str, body: str
    ) -> PullRequest:
        def create() -> PullRequest:
            project = self._project(repo)
            mr = project.mergerequests.create(
                {
                    "source_branch": head_branch,
                    "target_branch": base_branch,
                    "title": title,
                    "description": body,
                }
            )
            return self._pull_request(repo, project, mr)

        return self._call(
            f"open a merge request {head_branch} -> {base_branch}", create, write=True
        )

    def open_pull_requests(self, repo: RepoRef, base_branch: str) -> list[PullRequest]:
        def fetch() -> list[PullRequest]:
            project = self._project(repo)
            found = project.mergerequests.list(
                state="opened", target_branch=base_branch, get_all=True
            )
            return [self._pull_request(repo, project, mr) for mr in found]

        return self._call(f"list open merge requests into {base_branch}", fetch)

    # -- python-gitlab plumbing

    def _call(self, operation: str, fn: Callable[[], T], *, write: bool = False) -> T:
        attempt = _mapping_errors(operation, fn, self._timeout_s, self._calls.scrub)
        return self._calls.run(operation, attempt, write=write)

    def _current_username(self) -> str:
        self._gl.auth()
        assert self._gl.user is not None
        return str(self._gl.user.username)

    def _project(self, repo: RepoRef) -> Project:
        if repo.forge != "gitlab":
            raise ValueError(f"{repo.full_name} is a {repo.forge} repository, not GitLab")
        return self._gl.projects.get(repo.project_id or repo.full_name, lazy=True)

    def _mr(self, pr: PullRequest) -> ProjectMergeRequest:
        return self._project(pr.repo).mergerequests.get(pr.number, lazy=True)

    def _mr_path(self, pr: PullRequest) -> str:
        return f"/projects/{self._project(pr.repo).encoded_id}/merge_requests/{pr.number}"

    def _changes_before_15_7(self, pr: PullRequest) -> list[dict[str, Any]]:
        result = self._mr(pr).changes()
        assert isinstance(result, dict)
        if result.get("overflow"):
            raise ForgeError(
                f"!{pr.number} changes more files than this GitLab's /changes API lists; "
                "upgrade to GitLab 15.7+ (/diffs) or raise its diff limits"
            )
        return list(result.get("changes") or [])

    def _pull_request(
        self, repo: RepoRef, project: Project, mr: ProjectMergeRequest
    ) -> PullRequest:
        return pull_request(
            repo,
            mr.attributes,
            branch_sha=lambda branch: self._branch_sha(project, branch),
            head_clone_url=self._head_clone_url,
        )

    def _branch_sha(self, project: Project, branch: str) -> str:
        return str(project.branches.get(branch).commit["id"])

    def _head_clone_url(self, repo: RepoRef, mr: Mapping[str, Any]) -> str:
        try:
            source = self._gl.projects.get(mr["source_project_id"])
        except GitlabError as exc:
            if exc.response_code != 404:
                raise
            # A fork we cannot read: the target keeps refs/merge-requests/:iid/head.
            return repo.clone_url
        return str(source.http_url_to_repo)

    def _user_id(self, username: str) -> int | None:
        for user in self._gl.users.list(username=username, get_all=True):
            if str(user.username).lower() == username.lower():
                return int(user.id)
        return None


def _mapping_errors(
    operation: str, fn: Callable[[], T], timeout_s: float, scrub: Callable[[str], str]
) -> Callable[[], T]:
    """``fn`` with python-gitlab's and requests' errors as TransientError or ForgeError."""

    def attempt() -> T:
        try:
            return fn()
        except requests.Timeout:
            raise TransientError(f"no answer within {timeout_s:g}s") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientError(f"connection failed ({type(exc).__name__})") from None
        except GitlabAuthenticationError:
            raise ForgeError(
                f"{operation}: GitLab rejected the token (401 Unauthorized)", status=401
            ) from None
        except GitlabError as exc:
            raise ForgeError(
                f"{operation}: {scrub(describe(exc))}", status=exc.response_code
            ) from None

    return attempt


def _raise_transient(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """requests hook: 5xx and 429 become ``TransientError`` with the server's wait hint."""
    status = response.status_code
    if status < 500 and status != 429:
        return
    headers = dict(response.headers)
    # GitLab names its limit headers RateLimit-*; wait_hint also knows the X- spelling.
    if "RateLimit-Remaining" in headers:
        headers.setdefault("X-RateLimit-Remaining", headers["RateLimit-Remaining"])
    hint = wait_hint(headers)
    response.close()
    path = urlsplit(response.request.url or "").path
    raise TransientError(
        f"GitLab answered {status} to {response.request.method} {path}", status=status, wait_s=hint
    )


def _has_award(note: Any, emoji: str, username: str) -> bool:
    return any(
        a.name == emoji and a.user["username"] == username
        for a in note.awardemojis.list(get_all=True)
    )

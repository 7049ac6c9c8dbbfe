"""An emulator of the GitHub REST API calls Sluice makes, over real HTTP on 127.0.0.1.

It follows the published REST API (https://docs.github.com/en/rest) for every
endpoint below: paths, status codes, JSON error bodies, pagination with ``Link``
headers, rate-limit headers on every response, and ``url`` fields built from the
server's own base URL (PyGithub follows them and insists they share its host and
prefix). It can be served under a GitHub Enterprise style prefix (``/api/v3``).

A repository's branches are seeded with ``set_branch`` or, when its ``clone_url`` is a
local bare git repository, read from that repository (as GitHub knows what was pushed).

Tests seed state (repos, pull requests, reviews, users, collaborators, teams, GitHub Apps)
and inspect it (comments, statuses, reactions, the request log) from Python; they
drive the HTTP side only through PyGithub. Faults are injected from Python too.

Endpoints:
    GET   /user                                        the authenticated user
    GET   /repos/{o}/{r}
    GET   /repos/{o}/{r}/pulls                         paginated; state, base, head filters
    POST  /repos/{o}/{r}/pulls                         head/base resolved from branches
    GET   /repos/{o}/{r}/pulls/{n}
    GET   /repos/{o}/{r}/pulls/{n}/reviews             paginated, oldest first
    GET   /repos/{o}/{r}/pulls/{n}/files               paginated
    GET   /repos/{o}/{r}/issues/{n}/comments           paginated, oldest first
    POST  /repos/{o}/{r}/issues/{n}/comments
    GET   /repos/{o}/{r}/issues/comments/{id}
    PATCH /repos/{o}/{r}/issues/comments/{id}
    GET   /repos/{o}/{r}/issues/comments/{id}/reactions
    POST  /repos/{o}/{r}/issues/comments/{id}/reactions   201 new, 200 already there
    POST  /repos/{o}/{r}/statuses/{sha}
    GET   /repos/{o}/{r}/commits/{sha}/statuses        newest first
    GET   /repos/{o}/{r}/commits/{sha}/status          combined status
    GET   /repos/{o}/{r}/commits/{sha}/comments        paginated, oldest first
    POST  /repos/{o}/{r}/commits/{sha}/comments        422 for an unknown commit
    GET   /repos/{o}/{r}/comments/{id}                 a commit comment
    PATCH /repos/{o}/{r}/comments/{id}
    GET   /repos/{o}/{r}/collaborators/{user}/permission
    GET   /orgs/{org}/teams/{slug}/memberships/{user}  404 when not a member
    GET   /app                                         (app JWT)
    GET   /repos/{o}/{r}/installation                  (app JWT)
    POST  /app/installations/{id}/access_tokens        (app JWT)
    GET   /rate_limit
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import jwt

from tests.emulators.faults import FaultSchedule

DOCS = "https://docs.github.com/rest"
RATE_LIMIT = 5000
MAX_LISTED_FILES = 3000
REVIEW_STATES = ("APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED", "PENDING")
REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
STATUS_STATES = ("error", "failure", "pending", "success")
ROLES = ("admin", "maintain", "write", "triage", "read", "none")
# GitHub's legacy "permission" field folds the finer roles into admin/write/read/none.
LEGACY_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}
SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
    "again. If you reach out to GitHub Support for help, please include the request ID "
    "{request_id}."
)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------
# Faults


@dataclass(frozen=True)
class Fault:
    """One injected failure. Build with the class methods."""

    kind: Literal["error", "too_many", "secondary_limit", "primary_limit", "drop", "stall"]
    status: int = 500
    retry_after: int | None = None
    seconds: float = 0.0

    @classmethod
    def error(cls, status: int = 502) -> Fault:
        """A 5xx answer with a JSON error body."""
        return cls("error", status=status)

    @classmethod
    def too_many(cls, retry_after: int | None = 1) -> Fault:
        """429 Too Many Requests (GitHub's secondary limit answer) with Retry-After."""
        return cls("too_many", status=429, retry_after=retry_after)

    @classmethod
    def secondary_limit(cls, retry_after: int | None = 60) -> Fault:
        """403 "You have exceeded a secondary rate limit", Retry-After unless None."""
        return cls("secondary_limit", status=403, retry_after=retry_after)

    @classmethod
    def primary_limit(cls, reset_in: int = 30) -> Fault:
        """403 "API rate limit exceeded" with X-RateLimit-Remaining: 0 and a reset time."""
        return cls("primary_limit", status=403, seconds=float(reset_in))

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering."""
        return cls("drop")

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Answer nothing for ``seconds`` (a client timeout), then close the connection."""
        return cls("stall", seconds=seconds)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # API path without the base prefix, e.g. /repos/o/r/pulls/1
    query: dict[str, str]
    status: int | None  # None when the connection was dropped or stalled
    login: str | None  # whom the credentials named, None when anonymous/invalid
    at: float = field(default_factory=time.time)  # when it arrived (rate-limit checks)


# ---------------------------------------------------------------------------
# State


@dataclass
class User:
    login: str
    id: int
    type: Literal["User", "Bot", "Organization"] = "User"


@dataclass
class Repo:
    full_name: str
    id: int
    owner: str
    clone_url: str | None  # None: the emulator's own http URL
    private: bool = False
    fork: bool = False
    parent: str | None = None
    default_branch: str = "main"
    collaborators: dict[str, str] = field(default_factory=dict)  # login -> role name
    branches: dict[str, str] = field(default_factory=dict)  # name -> sha (seeded)

    @property
    def name(self) -> str:
        return self.full_name.split("/", 1)[1]

    def branch_sha(self, branch: str) -> str | None:
        """A seeded branch, else the branch in the local bare repo behind ``clone_url``."""
        if branch in self.branches:
            return self.branches[branch]
        if not self.clone_url or not os.path.isdir(self.clone_url):
            return None
        proc = subprocess.run(
            ["git", "--git-dir", self.clone_url, "rev-parse", "--verify", "--quiet",
             f"refs/heads/{branch}^{{commit}}"],
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        return proc.stdout.decode().strip() or None

    def has_commit(self, sha: str) -> bool:
        """Whether ``sha`` names a commit (any full SHA when no local bare repo backs it)."""
        if not re.fullmatch(r"[0-9a-f]{40}", sha):
            return False
        if not self.clone_url or not os.path.isdir(self.clone_url):
            return True
        proc = subprocess.run(
            ["git", "--git-dir", self.clone_url, "cat-file", "-t", sha],
            capture_output=True,
            timeout=30,
        )
        return proc.stdout.strip() == b"commit"

    def changed_paths(self, base: str, head: str) -> list[str]:
        if not self.clone_url or not os.path.isdir(self.clone_url):
            return []
        proc = subprocess.run(
            ["git", "--git-dir", self.clone_url, "diff", "--name-only", f"{base}...{head}"],
            capture_output=True,
            timeout=30,
        )
        return proc.stdout.decode().split()


@dataclass
class ChangedFile:
    filename: str
    status: Literal["added", "removed", "modified", "renamed", "copied", "changed", "unchanged"]
    previous_filename: str | None = None
    additions: int = 1
    deletions: int = 0


@dataclass
class Pull:
    repo: str
    number: int
    id: int
    title: str
    author: str
    base_ref: str
    base_sha: str
    head_ref: str
    head_sha: str
    head_repo: str | None  # full name; None when the fork was deleted
    draft: bool = False
    state: Literal["open", "closed"] = "open"
    merged: bool = False
    merge_commit_sha: str | None = None
    body: str = ""
    files: list[ChangedFile] = field(default_factory=list)
    created_at: datetime = field(default_factory=_now)


@dataclass
class Review:
    id: int
    repo: str
    number: int
    user: str
    state: str
    commit_id: str
    body: str
    submitted_at: datetime


@dataclass
class IssueComment:
    id: int
    repo: str
    number: int
    author: str
    body: str
    created_at: datetime
    updated_at: datetime


@dataclass
class CommitComment:
    id: int
    repo: str
    commit_id: str
    author: str
    body: str
    created_at: datetime
    updated_at: datetime


@dataclass
class Status:
    id: int
    repo: str
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None
    creator: str
    created_at: datetime


@dataclass
class Reaction:
    id: int
    comment_id: int
    content: str
    user: str
    created_at: datetime


@dataclass
class Team:
    org: str
    slug: str
    id: int
    members: dict[str, tuple[str, str]] = field(default_factory=dict)  # login -> (role, state)


@dataclass
class App:
    id: int
    slug: str
    public_key_pem: str
    installations: dict[int, list[str]] = field(default_factory=dict)  # id -> repo full names

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"


@dataclass
class _Credential:
    login: str
    installation_id: int | None = None  # set for installation access tokens
    expires_at: datetime | None = None


class HTTPError(Exception):
    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}


# ---------------------------------------------------------------------------
# The emulator


class GitHubEmulator:
    """A GitHub REST API on 127.0.0.1. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        base_path: str = "",
        bot_login: str = "sluice-bot",
        bot_token: str | None = None,
    ) -> None:
        if base_path and (not base_path.startswith("/") or base_path.endswith("/")):
            raise ValueError("base_path must start with '/' and not end with '/', e.g. /api/v3")
        self.base_path = base_path
        self.bot_login = bot_login
        self.bot_token = bot_token or f"ghp_{secrets.token_hex(18)}"
        self.latency_s = 0.0
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._ids = iter(range(1_000_001, 10**12))
        self._users: dict[str, User] = {}
        self._credentials: dict[str, _Credential] = {}
        self._rate_used: dict[str, int] = {}
        self._rate_reset = int(time.time()) + 3600
        self._repos: dict[str, Repo] = {}
        self._pulls: dict[tuple[str, int], Pull] = {}
        self._comments: dict[int, IssueComment] = {}
        self._commit_comments: dict[int, CommitComment] = {}
        self._reviews: list[Review] = []
        self._statuses: list[Status] = []
        self._reactions: list[Reaction] = []
        self._teams: dict[tuple[str, str], Team] = {}
        self._apps: dict[int, App] = {}
        self._faults = FaultSchedule()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_user(bot_login, token=self.bot_token, type="Bot")

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> GitHubEmulator:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> GitHubEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def web_url(self) -> str:
        """Where the HTML pages would live (``html_url`` fields)."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """The API root to give the client (PyGithub's ``base_url``)."""
        return self.web_url + self.base_path

    def _next_id(self) -> int:
        return next(self._ids)

    # -- seeding -----------------------------------------------------------

    def add_user(
        self,
        login: str,
        *,
        token: str | None = None,
        type: Literal["User", "Bot", "Organization"] = "User",
    ) -> User:
        with self._lock:
            user = self._users.get(login) or User(login=login, id=self._next_id(), type=type)
            self._users[login] = user
            if token is not None:
                self._credentials[token] = _Credential(login=login)
            return user

    def add_repo(
        self,
        full_name: str,
        *,
        clone_url: str | None = None,
        private: bool = False,
        fork_of: str | None = None,
        default_branch: str = "main",
    ) -> Repo:
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"repository name must be 'owner/name', got {full_name!r}")
        with self._lock:
            self.add_user(owner)
            repo = Repo(
                full_name=full_name,
                id=self._next_id(),
                owner=owner,
                clone_url=clone_url,
                private=private,
                fork=fork_of is not None,
                parent=fork_of,
                default_branch=default_branch,
            )
            self._repos[full_name] = repo
            return repo

    def add_pull(
        self,
        repo: str,
        *,
        number: int | None = None,
        title: str = "Change things",
        author: str = "alice",
        base_ref: str = "main",
        base_sha: str = "a" * 40,
        head_ref: str = "feature",
        head_sha: str = "b" * 40,
        head_repo: str | None = None,
        draft: bool = False,
        state: Literal["open", "closed"] = "open",
        merged: bool = False,
        merge_commit_sha: str | None = None,
        files: list[str | ChangedFile] | None = None,
    ) -> Pull:
        """Seed a pull request. ``head_repo`` names a fork (seed it with add_repo first)."""
        with self._lock:
            self._repo_or_raise(repo)
            if head_repo is not None:
                self._repo_or_raise(head_repo)
            self.add_user(author)
            if number is None:
                taken = [n for (r, n) in self._pulls if r == repo]
                number = max(taken, default=0) + 1
            pull = Pull(
                repo=repo,
                number=number,
                id=self._next_id(),
                title=title,
                author=author,
                base_ref=base_ref,
                base_sha=base_sha,
                head_ref=head_ref,
                head_sha=head_sha,
                head_repo=head_repo if head_repo is not None else repo,
                draft=draft,
                state="closed" if merged else state,
                merged=merged,
                merge_commit_sha=merge_commit_sha,
                files=[
                    f if isinstance(f, ChangedFile) else ChangedFile(f, "modified")
                    for f in files or []
                ],
            )
            self._pulls[(repo, number)] = pull
            return pull

    def delete_head_repo(self, repo: str, number: int) -> None:
        """Make the PR's head repository disappear, as when a fork is deleted."""
        with self._lock:
            self._pulls[(repo, number)].head_repo = None

    def add_comment(self, repo: str, number: int, body: str, *, author: str = "alice") -> int:
        with self._lock:
            self._pull_or_raise(repo, number)
            self.add_user(author)
            moment = _now()
            comment = IssueComment(self._next_id(), repo, number, author, body, moment, moment)
            self._comments[comment.id] = comment
            return comment.id

    def add_review(
        self,
        repo: str,
        number: int,
        user: str,
        *,
        state: str = "APPROVED",
        commit_id: str | None = None,
        body: str = "",
    ) -> Review:
        """A submitted review, for the PR's current head unless ``commit_id`` says otherwise."""
        if state not in REVIEW_STATES:
            raise ValueError(f"review state must be one of {REVIEW_STATES}")
        with self._lock:
            pull = self._pull_or_raise(repo, number)
            self.add_user(user)
            review = Review(
                self._next_id(), repo, number, user, state, commit_id or pull.head_sha, body, _now()
            )
            self._reviews.append(review)
            return review

    def set_branch(self, repo: str, branch: str, sha: str) -> None:
        with self._lock:
            self._repo_or_raise(repo).branches[branch] = sha

    def merge_pull(self, repo: str, number: int, merge_commit_sha: str) -> Pull:
        """Mark a pull request merged by ``merge_commit_sha`` (the merge happened in git)."""
        with self._lock:
            pull = self._pull_or_raise(repo, number)
            pull.state, pull.merged, pull.merge_commit_sha = "closed", True, merge_commit_sha
            return pull

    def pulls(self, repo: str) -> list[Pull]:
        with self._lock:
            return sorted(
                (p for p in self._pulls.values() if p.repo == repo), key=lambda p: p.number
            )

    def set_permission(self, repo: str, login: str, role: str) -> None:
        """Make ``login`` a collaborator with ``role`` (admin/maintain/write/triage/read
        or a custom role name, which GitHub reports with the legacy permission "read")."""
        with self._lock:
            self.add_user(login)
            self._repo_or_raise(repo).collaborators[login] = role

    def add_team(
        self,
        org: str,
        slug: str,
        *,
        members: dict[str, str] | list[str] | None = None,
        pending: list[str] | None = None,
    ) -> Team:
        """A team; ``members`` maps login → role ("member"/"maintainer") or lists logins."""
        with self._lock:
            self.add_user(org, type="Organization")
            team = Team(org=org, slug=slug, id=self._next_id())
            roles = members if isinstance(members, dict) else dict.fromkeys(members or [], "member")
            for login, role in roles.items():
                self.add_user(login)
                team.members[login] = (role, "active")
            for login in pending or []:
                self.add_user(login)
                team.members[login] = ("member", "pending")
            self._teams[(org, slug)] = team
            return team

    def add_app(
        self,
        app_id: int,
        *,
        slug: str,
        public_key_pem: str,
        installations: dict[int, list[str]],
    ) -> App:
        """A GitHub App whose JWTs verify with ``public_key_pem`` (RS256)."""
        with self._lock:
            app = App(app_id, slug, public_key_pem, {k: list(v) for k, v in installations.items()})
            self._apps[app_id] = app
            self.add_user(app.bot_login, type="Bot")
            return app

    # -- faults ------------------------------------------------------------

    def inject(self, *faults: Fault, method: str | None = None, path: str | None = None) -> None:
        """Queue faults; each answers the next request matching ``method`` and the
        ``path`` regular expression (searched in the API path), in order."""
        self._faults.inject(faults, method, path)

    def fail_randomly(self, fraction: float, *faults: Fault, seed: int = 0) -> None:
        """Answer about ``fraction`` of requests with one of ``faults`` (0 turns it off)."""
        self._faults.fail_randomly(fraction, faults or (Fault.error(),), seed)

    def clear_faults(self) -> None:
        self._faults.clear()
        self.latency_s = 0.0

    def pending_faults(self) -> int:
        return self._faults.pending()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        return self._faults.take(method, path)

    # -- inspection ----------------------------------------------------------

    def comments(self, repo: str, number: int) -> list[IssueComment]:
        with self._lock:
            found = [c for c in self._comments.values() if (c.repo, c.number) == (repo, number)]
            return sorted(found, key=lambda c: c.id)

    def comment(self, comment_id: int) -> IssueComment:
        with self._lock:
            return self._comments[comment_id]

    def commit_comments(self, repo: str, sha: str) -> list[CommitComment]:
        """Comments on commit ``sha``, oldest first."""
        with self._lock:
            found = [
                c for c in self._commit_comments.values() if (c.repo, c.commit_id) == (repo, sha)
            ]
            return sorted(found, key=lambda c: c.id)

    def statuses(self, repo: str, sha: str) -> list[Status]:
        """Every status posted for ``sha``, oldest first."""
        with self._lock:
            return [s for s in self._statuses if (s.repo, s.sha) == (repo, sha)]

    def reactions(self, comment_id: int) -> list[Reaction]:
        with self._lock:
            return [r for r in self._reactions if r.comment_id == comment_id]

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        with self._lock:
            return [r for r in self.requests if r.method == method and pattern.search(r.path)]

    # -- webhook payloads ----------------------------------------------------

    def pull_request_event(
        self,
        repo: str,
        number: int,
        *,
        action: str = "opened",
        sender: str | None = None,
        installation_id: int | None = None,
    ) -> dict[str, Any]:
        """A ``pull_request`` webhook payload built from the current state."""
        with self._lock:
            pull = self._pull_or_raise(repo, number)
            payload: dict[str, Any] = {
                "action": action,
                "number": number,
                "pull_request": self._pull_json(pull),
                "repository": self._repo_json(self._repo_or_raise(repo)),
                "sender": self._user_json(sender or pull.author),
            }
            if installation_id is not None:
                payload["installation"] = {
                    "id": installation_id,
                    "node_id": f"MDIz{installation_id}",
                }
            return payload

    def issue_comment_event(
        self,
        repo: str,
        comment_id: int,
        *,
        action: str = "created",
        installation_id: int | None = None,
    ) -> dict[str, Any]:
        """An ``issue_comment`` webhook payload for a comment on a pull request."""
        with self._lock:
            comment = self._comments[comment_id]
            pull = self._pull_or_raise(repo, comment.number)
            api = self._api(f"/repos/{repo}")
            payload: dict[str, Any] = {
                "action": action,
                "issue": {
                    "url": f"{api}/issues/{pull.number}",
                    "html_url": f"{self.web_url}/{repo}/pull/{pull.number}",
                    "number": pull.number,
                    "title": pull.title,
                    "state": pull.state,
                    "user": self._user_json(pull.author),
                    "pull_request": {
                        "url": f"{api}/pulls/{pull.number}",
                        "html_url": f"{self.web_url}/{repo}/pull/{pull.number}",
                        "diff_url": f"{self.web_url}/{repo}/pull/{pull.number}.diff",
                        "patch_url": f"{self.web_url}/{repo}/pull/{pull.number}.patch",
                    },
                },
                "comment": self._comment_json(comment),
                "repository": self._repo_json(self._repo_or_raise(repo)),
                "sender": self._user_json(comment.author),
            }
            if installation_id is not None:
                payload["installation"] = {
                    "id": installation_id,
                    "node_id": f"MDIz{installation_id}",
                }
            return payload

    def push_event(
        self,
        repo: str,
        *,
        ref: str = "refs/heads/main",
        before: str,
        after: str,
        pusher: str = "alice",
        forced: bool = False,
        installation_id: int | None = None,
    ) -> dict[str, Any]:
        """A ``push`` webhook payload (created/deleted follow from the zero SHAs)."""
        zero = "0" * 40
        with self._lock:
            repository = self._repo_json(self._repo_or_raise(repo))
            user = self._user_json(pusher)
        short = ref.rsplit("/", 1)[-1]
        payload: dict[str, Any] = {
            "ref": ref,
            "before": before,
            "after": after,
            "created": before == zero,
            "deleted": after == zero,
            "forced": forced,
            "base_ref": None,
            "compare": f"{self.web_url}/{repo}/compare/{before[:12]}...{after[:12]}",
            "commits": [],
            "head_commit": None if after == zero else {"id": after, "distinct": True},
            "repository": {**repository, "master_branch": repository["default_branch"]},
            "pusher": {"name": pusher, "email": f"{pusher}@users.noreply.example"},
            "sender": user,
        }
        if before == zero:
            payload["compare"] = f"{self.web_url}/{repo}/commit/{short}"
        if installation_id is not None:
            payload["installation"] = {"id": installation_id, "node_id": f"MDIz{installation_id}"}
        return payload

    # -- JSON shapes -----------------------------------------------------------

    def _api(self, path: str) -> str:
        return self.base_url + path

    def _user_json(self, login: str) -> dict[str, Any]:
        user = self._users.get(login) or User(login=login, id=0)
        return {
            "login": user.login,
            "id": user.id,
            "node_id": f"U_{user.id}",
            "type": user.type,
            "site_admin": False,
            "url": self._api(f"/users/{quote(user.login)}"),
            "html_url": f"{self.web_url}/{quote(user.login)}",
        }

    def _repo_json(self, repo: Repo) -> dict[str, Any]:
        api = self._api(f"/repos/{repo.full_name}")
        data: dict[str, Any] = {
            "id": repo.id,
            "node_id": f"R_{repo.id}",
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "visibility": "private" if repo.private else "public",
            "owner": self._user_json(repo.owner),
            "html_url": f"{self.web_url}/{repo.full_name}",
            "description": None,
            "fork": repo.fork,
            "url": api,
            "pulls_url": api + "/pulls{/number}",
            "statuses_url": api + "/statuses/{sha}",
            "clone_url": repo.clone_url or f"{self.web_url}/{repo.full_name}.git",
            "git_url": f"git://127.0.0.1/{repo.full_name}.git",
            "ssh_url": f"git@127.0.0.1:{repo.full_name}.git",
            "default_branch": repo.default_branch,
            "archived": False,
            "disabled": False,
        }
        if repo.parent is not None and repo.parent in self._repos:
            parent = self._repos[repo.parent]
            data["parent"] = {k: v for k, v in self._repo_json(parent).items() if k != "parent"}
        return data

    def _branch_json(self, pull: Pull, side: Literal["base", "head"]) -> dict[str, Any]:
        name = pull.repo if side == "base" else pull.head_repo
        repo = self._repos.get(name) if name is not None else None
        ref = pull.base_ref if side == "base" else pull.head_ref
        sha = pull.base_sha if side == "base" else pull.head_sha
        owner = repo.owner if repo is not None else pull.author
        return {
            "label": f"{owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": self._user_json(owner),
            "repo": self._repo_json(repo) if repo is not None else None,
        }

    def _pull_json(self, pull: Pull) -> dict[str, Any]:
        api = self._api(f"/repos/{pull.repo}")
        html = f"{self.web_url}/{pull.repo}/pull/{pull.number}"
        closed_at = _iso(pull.created_at) if pull.state == "closed" else None
        return {
            "url": f"{api}/pulls/{pull.number}",
            "id": pull.id,
            "node_id": f"PR_{pull.id}",
            "html_url": html,
            "diff_url": html + ".diff",
            "patch_url": html + ".patch",
            "issue_url": f"{api}/issues/{pull.number}",
            "commits_url": f"{api}/pulls/{pull.number}/commits",
            "comments_url": f"{api}/issues/{pull.number}/comments",
            "statuses_url": f"{api}/statuses/{pull.head_sha}",
            "number": pull.number,
            "state": pull.state,
            "locked": False,
            "title": pull.title,
            "user": self._user_json(pull.author),
            "body": pull.body,
            "created_at": _iso(pull.created_at),
            "updated_at": _iso(pull.created_at),
            "closed_at": closed_at,
            "merged_at": closed_at if pull.merged else None,
            "merge_commit_sha": pull.merge_commit_sha,
            "draft": pull.draft,
            "head": self._branch_json(pull, "head"),
            "base": self._branch_json(pull, "base"),
            "author_association": "CONTRIBUTOR",
            "merged": pull.merged,
            "mergeable": None,
            "comments": len(self.comments(pull.repo, pull.number)),
            "changed_files": len(pull.files),
            "additions": sum(f.additions for f in pull.files),
            "deletions": sum(f.deletions for f in pull.files),
        }

    def _file_json(self, pull: Pull, changed: ChangedFile) -> dict[str, Any]:
        data: dict[str, Any] = {
            "sha": "0" * 40,
            "filename": changed.filename,
            "status": changed.status,
            "additions": changed.additions,
            "deletions": changed.deletions,
            "changes": changed.additions + changed.deletions,
            "blob_url": f"{self.web_url}/{pull.repo}/blob/{pull.head_sha}/{changed.filename}",
            "raw_url": f"{self.web_url}/{pull.repo}/raw/{pull.head_sha}/{changed.filename}",
            "contents_url": self._api(
                f"/repos/{pull.repo}/contents/{changed.filename}?ref={pull.head_sha}"
            ),
        }
        if changed.previous_filename is not None:
            data["previous_filename"] = changed.previous_filename
        return data

    def _comment_json(self, comment: IssueComment) -> dict[str, Any]:
        api = self._api(f"/repos/{comment.repo}")
        return {
            "id": comment.id,
            "node_id": f"IC_{comment.id}",
            "url": f"{api}/issues/comments/{comment.id}",
            "html_url": (
                f"{self.web_url}/{comment.repo}/pull/{comment.number}#issuecomment-{comment.id}"
            ),
            "issue_url": f"{api}/issues/{comment.number}",
            "body": comment.body,
            "user": self._user_json(comment.author),
            "created_at": _iso(comment.created_at),
            "updated_at": _iso(comment.updated_at),
            "author_association": "NONE",
        }

    def _commit_comment_json(self, comment: CommitComment) -> dict[str, Any]:
        return {
            "id": comment.id,
            "node_id": f"CC_{comment.id}",
            "url": self._api(f"/repos/{comment.repo}/comments/{comment.id}"),
            "html_url": (
                f"{self.web_url}/{comment.repo}/commit/{comment.commit_id}"
                f"#commitcomment-{comment.id}"
            ),
            "body": comment.body,
            "path": None,
            "position": None,
            "line": None,
            "commit_id": comment.commit_id,
            "user": self._user_json(comment.author),
            "created_at": _iso(comment.created_at),
            "updated_at": _iso(comment.updated_at),
            "author_association": "NONE",
        }

    def _status_json(self, status: Status) -> dict[str, Any]:
        return {
            "url": self._api(f"/repos/{status.repo}/statuses/{status.sha}"),
            "id": status.id,
            "node_id": f"SC_{status.id}",
            "state": status.state,
            "description": status.description,
            "target_url": status.target_url,
            "context": status.context,
            "created_at": _iso(status.created_at),
            "updated_at": _iso(status.created_at),
            "creator": self._user_json(status.creator),
        }

    def _review_json(self, review: Review) -> dict[str, Any]:
        html = f"{self.web_url}/{review.repo}/pull/{review.number}"
        return {
            "id": review.id,
            "node_id": f"PRR_{review.id}",
            "user": self._user_json(review.user),
            "body": review.body,
            "state": review.state,
            "html_url": f"{html}#pullrequestreview-{review.id}",
            "pull_request_url": self._api(f"/repos/{review.repo}/pulls/{review.number}"),
            "submitted_at": _iso(review.submitted_at),
            "commit_id": review.commit_id,
            "author_association": "COLLABORATOR",
        }

    def _reaction_json(self, reaction: Reaction) -> dict[str, Any]:
        return {
            "id": reaction.id,
            "node_id": f"REA_{reaction.id}",
            "user": self._user_json(reaction.user),
            "content": reaction.content,
            "created_at": _iso(reaction.created_at),
        }

    # -- lookups -----------------------------------------------------------------

    def _repo_or_raise(self, full_name: str) -> Repo:
        repo = self._repos.get(full_name)
        if repo is None:
            raise KeyError(f"no repository {full_name!r} seeded")
        return repo

    def _pull_or_raise(self, repo: str, number: int) -> Pull:
        pull = self._pulls.get((repo, number))
        if pull is None:
            raise KeyError(f"no pull request {repo}#{number} seeded")
        return pull

    # -- request handling (called from server threads) ----------------------------

    def _rate_headers(self, key: str, *, exhausted_until: int | None = None) -> dict[str, str]:
        with self._lock:
            now = int(time.time())
            if now >= self._rate_reset:
                self._rate_reset = now + 3600
                self._rate_used.clear()
            used = self._rate_used.get(key, 0) + 1
            self._rate_used[key] = used
            remaining = max(0, RATE_LIMIT - used)
            reset = self._rate_reset
            if exhausted_until is not None:
                remaining, reset = 0, exhausted_until
            return {
                "X-RateLimit-Limit": str(RATE_LIMIT),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(reset),
                "X-RateLimit-Used": str(used),
                "X-RateLimit-Resource": "core",
            }

    def _authenticate(self, header: str | None) -> tuple[str, _Credential | App | None]:
        """(rate-limit key, credential). Raises 401 for credentials that do not verify."""
        if not header:
            return "anonymous", None
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() not in ("token", "bearer") or not value:
            raise HTTPError(401, "Bad credentials")
        with self._lock:
            credential = self._credentials.get(value)
        if credential is not None:
            if credential.expires_at is not None and credential.expires_at < _now():
                raise HTTPError(401, "Bad credentials")
            return value, credential
        if value.count(".") == 2:
            return f"app:{value[-16:]}", self._verify_jwt(value)
        raise HTTPError(401, "Bad credentials")

    def _verify_jwt(self, token: str) -> App:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            app = self._apps[int(issuer)]
            jwt.decode(token, app.public_key_pem, algorithms=["RS256"], leeway=60)
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            raise HTTPError(
                401, "A JSON web token could not be decoded", {"status": "401"}
            ) from None
        return app

    def _serve(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        auth: _Credential | App | None,
    ) -> tuple[int, Any, dict[str, str]]:
        for route_method, pattern, handler in _ROUTES:
            if route_method != method:
                continue
            match = pattern.fullmatch(path)
            if match:
                with self._lock:
                    return handler(self, _Call(auth, query, body, path), **match.groupdict())
        raise HTTPError(404, "Not Found")


@dataclass
class _Call:
    auth: _Credential | App | None
    query: dict[str, str]
    body: Any
    path: str

    def user(self) -> str:
        """The login of a user or installation credential; 401 otherwise."""
        if isinstance(self.auth, _Credential):
            return self.auth.login
        if isinstance(self.auth, App):
            raise HTTPError(
                401, "A JSON web token was used where an installation or user token is required"
            )
        raise HTTPError(401, "Requires authentication")

    def app(self) -> App:
        if not isinstance(self.auth, App):
            raise HTTPError(
                401,
                "A JSON web token could not be decoded",
            )
        return self.auth


# ---------------------------------------------------------------------------
# Route handlers: (emulator, call, **path params) -> (status, json, extra headers)

Result = tuple[int, Any, dict[str, str]]


def _visible_repo(emu: GitHubEmulator, call: _Call, owner: str, name: str) -> Repo:
    login = call.user()
    repo = emu._repos.get(f"{owner}/{name}")
    if repo is None:
        raise HTTPError(404, "Not Found")
    credential = call.auth
    assert isinstance(credential, _Credential)
    if credential.installation_id is not None:
        allowed = any(
            repo.full_name in app.installations.get(credential.installation_id, [])
            for app in emu._apps.values()
        )
        if not allowed:
            raise HTTPError(404, "Not Found")
    elif repo.private and login != repo.owner and login not in repo.collaborators:
        raise HTTPError(404, "Not Found")
    return repo


def _pull(emu: GitHubEmulator, call: _Call, owner: str, name: str, number: str) -> Pull:
    repo = _visible_repo(emu, call, owner, name)
    pull = emu._pulls.get((repo.full_name, int(number)))
    if pull is None:
        raise HTTPError(404, "Not Found")
    return pull


def _comment(emu: GitHubEmulator, call: _Call, owner: str, name: str, cid: str) -> IssueComment:
    repo = _visible_repo(emu, call, owner, name)
    comment = emu._comments.get(int(cid))
    if comment is None or comment.repo != repo.full_name:
        raise HTTPError(404, "Not Found")
    return comment


def _paginate(emu: GitHubEmulator, call: _Call, items: list[Any]) -> Result:
    try:
        per_page = int(call.query.get("per_page", "30"))
        page = int(call.query.get("page", "1"))
    except ValueError:
        raise HTTPError(422, "Validation Failed") from None
    per_page = max(1, min(per_page, 100))
    page = max(page, 1)
    last = max(1, -(-len(items) // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]

    def link(target: int) -> str:
        params = {**call.query, "per_page": str(per_page), "page": str(target)}
        return f"{emu.base_url}{call.path}?{urlencode(params)}"

    rels = []
    if page < last:
        rels += [f'<{link(page + 1)}>; rel="next"', f'<{link(last)}>; rel="last"']
    if page > 1:
        rels += [f'<{link(1)}>; rel="first"', f'<{link(page - 1)}>; rel="prev"']
    return 200, chunk, ({"Link": ", ".join(rels)} if rels else {})


def _body_field(call: _Call, name: str, *, required: bool = True) -> Any:
    if not isinstance(call.body, dict):
        raise HTTPError(400, "Problems parsing JSON")
    value = call.body.get(name)
    if required and (value is None or not isinstance(value, str)):
        raise HTTPError(
            422,
            "Validation Failed",
            {"errors": [{"resource": "IssueComment", "code": "missing_field", "field": name}]},
        )
    return value


def get_user(emu: GitHubEmulator, call: _Call) -> Result:
    if isinstance(call.auth, _Credential) and call.auth.installation_id is not None:
        raise HTTPError(403, "Resource not accessible by integration")
    login = call.user()
    return 200, {**emu._user_json(login), "name": login}, {}


def get_rate_limit(emu: GitHubEmulator, call: _Call) -> Result:
    core = {"limit": RATE_LIMIT, "remaining": RATE_LIMIT, "reset": emu._rate_reset, "used": 0}
    return 200, {"resources": {"core": core}, "rate": core}, {}


def get_repo(emu: GitHubEmulator, call: _Call, owner: str, name: str) -> Result:
    return 200, emu._repo_json(_visible_repo(emu, call, owner, name)), {}


def get_pull(emu: GitHubEmulator, call: _Call, owner: str, name: str, number: str) -> Result:
    return 200, emu._pull_json(_pull(emu, call, owner, name, number)), {}


def list_pulls(emu: GitHubEmulator, call: _Call, owner: str, name: str) -> Result:
    repo = _visible_repo(emu, call, owner, name)
    state = call.query.get("state", "open")
    if state not in ("open", "closed", "all"):
        raise HTTPError(422, "Validation Failed")
    found = [p for p in emu._pulls.values() if p.repo == repo.full_name]
    if state != "all":
        found = [p for p in found if p.state == state]
    if "base" in call.query:
        found = [p for p in found if p.base_ref == call.query["base"]]
    if "head" in call.query:
        owner_, _, ref = call.query["head"].partition(":")
        found = [p for p in found if p.head_ref == ref and (p.head_repo or "").startswith(owner_)]
    found.sort(key=lambda p: p.number, reverse=call.query.get("direction", "desc") == "desc")
    return _paginate(emu, call, [emu._pull_json(p) for p in found])


def create_pull(emu: GitHubEmulator, call: _Call, owner: str, name: str) -> Result:
    repo = _visible_repo(emu, call, owner, name)
    title = _body_field(call, "title")
    head = _body_field(call, "head")
    base = _body_field(call, "base")
    head_ref = head.partition(":")[2] if ":" in head else head
    head_sha, base_sha = repo.branch_sha(head_ref), repo.branch_sha(base)
    invalid = [f for f, sha in (("head", head_sha), ("base", base_sha)) if sha is None]
    if invalid:
        raise HTTPError(
            422,
            "Validation Failed",
            {
                "errors": [
                    {"resource": "PullRequest", "field": f, "code": "invalid"} for f in invalid
                ]
            },
        )
    assert head_sha is not None and base_sha is not None
    for other in emu._pulls.values():
        if (other.repo, other.head_ref, other.base_ref, other.state) == (
            repo.full_name,
            head_ref,
            base,
            "open",
        ):
            raise HTTPError(
                422,
                "Validation Failed",
                {"errors": [{"resource": "PullRequest", "code": "custom",
                             "message": f"A pull request already exists for {owner}:{head_ref}."}]},
            )  # fmt: skip
    pull = emu.add_pull(
        repo.full_name,
        title=title,
        author=call.user(),
        base_ref=base,
        base_sha=base_sha,
        head_ref=head_ref,
        head_sha=head_sha,
        draft=bool((call.body or {}).get("draft")),
        files=list(repo.changed_paths(base_sha, head_sha)),
    )
    pull.body = _body_field(call, "body", required=False) or ""
    headers = {"Location": emu._pull_json(pull)["url"]}
    return 201, emu._pull_json(pull), headers


def list_reviews(emu: GitHubEmulator, call: _Call, owner: str, name: str, number: str) -> Result:
    pull = _pull(emu, call, owner, name, number)
    found = [
        r for r in emu._reviews
        if (r.repo, r.number) == (pull.repo, pull.number) and r.state != "PENDING"
    ]  # fmt: skip
    return _paginate(emu, call, [emu._review_json(r) for r in found])


def list_pull_files(emu: GitHubEmulator, call: _Call, owner: str, name: str, number: str) -> Result:
    pull = _pull(emu, call, owner, name, number)
    listed = pull.files[:MAX_LISTED_FILES]  # GitHub lists at most 3000 files per PR
    return _paginate(emu, call, [emu._file_json(pull, f) for f in listed])


def list_issue_comments(
    emu: GitHubEmulator, call: _Call, owner: str, name: str, number: str
) -> Result:
    pull = _pull(emu, call, owner, name, number)
    found = emu.comments(pull.repo, pull.number)
    return _paginate(emu, call, [emu._comment_json(c) for c in found])


def create_issue_comment(
    emu: GitHubEmulator, call: _Call, owner: str, name: str, number: str
) -> Result:
    pull = _pull(emu, call, owner, name, number)
    body = _body_field(call, "body")
    moment = _now()
    comment = IssueComment(
        emu._next_id(), pull.repo, pull.number, call.user(), body, moment, moment
    )
    emu._comments[comment.id] = comment
    headers = {"Location": emu._comment_json(comment)["url"]}
    return 201, emu._comment_json(comment), headers


def get_issue_comment(emu: GitHubEmulator, call: _Call, owner: str, name: str, cid: str) -> Result:
    return 200, emu._comment_json(_comment(emu, call, owner, name, cid)), {}


def edit_issue_comment(emu: GitHubEmulator, call: _Call, owner: str, name: str, cid: str) -> Result:
    comment = _comment(emu, call, owner, name, cid)
    comment.body = _body_field(call, "body")
    comment.updated_at = _now()
    return 200, emu._comment_json(comment), {}


def list_commit_comments(
    emu: GitHubEmulator, call: _Call, owner: str, name: str, sha: str
) -> Result:
    repo = _visible_repo(emu, call, owner, name)
    if not repo.has_commit(sha):
        raise HTTPError(422, f"No commit found for SHA: {sha}")
    found = emu.commit_comments(repo.full_name, sha)
    return _paginate(emu, call, [emu._commit_comment_json(c) for c in found])


def create_commit_comment(
    emu: GitHubEmulator, call: _Call, owner: str, name: str, sha: str
) -> Result:
    repo = _visible_repo(emu, call, owner, name)
    body = _body_field(call, "body")
    if not repo.has_commit(sha):
        raise HTTPError(422, f"No commit found for SHA: {sha}")
    moment = _now()
    comment = CommitComment(emu._next_id(), repo.full_name, sha, call.user(), body, moment, moment)
    emu._commit_comments[comment.id] = comment
    data = emu._commit_comment_json(comment)
    return 201, data, {"Location": data["url"]}


def _commit_comment(
    emu: GitHubEmulator, call: _Call, owner: str, name: str, cid: str
) -> CommitComment:
    repo = _visible_repo(emu, call, owner, name)
    comment = emu._commit_comments.get(int(cid))
    if comment is None or comment.repo != repo.full_name:
        raise HTTPError(404, "Not Found")
    return comment


def get_commit_comment(emu: GitHubEmulator, call: _Call, owner: str, name: str, cid: str) -> Result:
    return 200, emu._commit_comment_json(_commit_comment(emu, call, owner, name, cid)), {}


def edit_commit_comment(
    emu: GitHubEmulator, call: _Call, owner: str, name: str, cid: str
) -> Result:
    comment = _commit_comment(emu, call, owner, name, cid)
    comment.body = _body_field(call, "body")
    comment.updated_at = _now()
    return 200, emu._commit_comment_json(comment), {}


def list_reactions(emu: GitHubEmulator, call: _Call, owner: str, name: str, cid: str) -> Result:
    comment = _comment(emu, call, owner, name, cid)
    return _paginate(emu, call, [emu._reaction_json(r) for r in emu.reactions(comment.id)])


def create_reaction(emu: GitHubEmulator, call: _Call, owner: str, name: str, cid: str) -> Result:
    comment = _comment(emu, call, owner, name, cid)
    content = _body_field(call, "content")
    if content not in REACTIONS:
        raise HTTPError(
            422,
            "Validation Failed",
            {"errors": [{"resource": "Reaction", "code": "invalid", "field": "content"}]},
        )
    login = call.user()
    for existing in emu.reactions(comment.id):
        if existing.user == login and existing.content == content:
            return 200, emu._reaction_json(existing), {}
    reaction = Reaction(emu._next_id(), comment.id, content, login, _now())
    emu._reactions.append(reaction)
    return 201, emu._reaction_json(reaction), {}


def create_status(emu: GitHubEmulator, call: _Call, owner: str, name: str, sha: str) -> Result:
    repo = _visible_repo(emu, call, owner, name)
    state = _body_field(call, "state")
    description = _body_field(call, "description", required=False)
    errors = []
    if state not in STATUS_STATES:
        errors.append({"resource": "Status", "code": "custom", "field": "state"})
    if description is not None and len(description) > 140:
        errors.append(
            {
                "resource": "Status",
                "code": "custom",
                "field": "description",
                "message": "description is too long (maximum is 140 characters)",
            }
        )
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise HTTPError(422, f"No commit found for SHA: {sha}")
    if errors:
        raise HTTPError(422, "Validation Failed", {"errors": errors})
    status = Status(
        id=emu._next_id(),
        repo=repo.full_name,
        sha=sha,
        state=state,
        context=_body_field(call, "context", required=False) or "default",
        description=description,
        target_url=_body_field(call, "target_url", required=False),
        creator=call.user(),
        created_at=_now(),
    )
    emu._statuses.append(status)
    return 201, emu._status_json(status), {}


def list_statuses(emu: GitHubEmulator, call: _Call, owner: str, name: str, sha: str) -> Result:
    repo = _visible_repo(emu, call, owner, name)
    newest_first = list(reversed(emu.statuses(repo.full_name, sha)))
    return _paginate(emu, call, [emu._status_json(s) for s in newest_first])


def combined_status(emu: GitHubEmulator, call: _Call, owner: str, name: str, sha: str) -> Result:
    repo = _visible_repo(emu, call, owner, name)
    latest: dict[str, Status] = {}
    for status in emu.statuses(repo.full_name, sha):
        latest[status.context] = status
    states = {s.state for s in latest.values()}
    if states & {"error", "failure"}:
        state = "failure"
    elif "pending" in states or not states:
        state = "pending"
    else:
        state = "success"
    api = emu._api(f"/repos/{repo.full_name}")
    return (
        200,
        {
            "state": state,
            "statuses": [emu._status_json(s) for s in latest.values()],
            "sha": sha,
            "total_count": len(latest),
            "repository": emu._repo_json(repo),
            "commit_url": f"{api}/commits/{sha}",
            "url": f"{api}/commits/{sha}/status",
        },
        {},
    )


def get_permission(emu: GitHubEmulator, call: _Call, owner: str, name: str, user: str) -> Result:
    repo = _visible_repo(emu, call, owner, name)
    if user not in emu._users:
        raise HTTPError(404, "Not Found")
    if user == repo.owner:
        role = "admin"
    else:
        role = repo.collaborators.get(user, "none" if repo.private else "read")
    return (
        200,
        {
            "permission": LEGACY_PERMISSION.get(role, "read"),
            "role_name": role,
            "user": emu._user_json(user),
        },
        {},
    )


def get_team_membership(emu: GitHubEmulator, call: _Call, org: str, slug: str, user: str) -> Result:
    call.user()
    team = emu._teams.get((org, slug))
    if team is None or user not in team.members:
        raise HTTPError(404, "Not Found")
    role, state = team.members[user]
    url = emu._api(f"/organizations/{emu._users[org].id}/team/{team.id}/memberships/{user}")
    return 200, {"url": url, "role": role, "state": state}, {}


def get_app(emu: GitHubEmulator, call: _Call) -> Result:
    app = call.app()
    return (
        200,
        {
            "id": app.id,
            "slug": app.slug,
            "node_id": f"A_{app.id}",
            "name": app.slug,
            "owner": emu._user_json(emu.bot_login),
            "html_url": f"{emu.web_url}/apps/{app.slug}",
            "permissions": {"pull_requests": "write", "statuses": "write", "contents": "read"},
            "events": ["pull_request", "issue_comment"],
        },
        {},
    )


def _installation_json(emu: GitHubEmulator, app: App, installation_id: int) -> dict[str, Any]:
    return {
        "id": installation_id,
        "app_id": app.id,
        "app_slug": app.slug,
        "target_type": "Organization",
        "account": emu._user_json(emu.bot_login),
        "repository_selection": "selected",
        "access_tokens_url": emu._api(f"/app/installations/{installation_id}/access_tokens"),
        "repositories_url": emu._api("/installation/repositories"),
        "html_url": f"{emu.web_url}/settings/installations/{installation_id}",
        "permissions": {"pull_requests": "write", "statuses": "write", "contents": "read"},
        "events": ["pull_request", "issue_comment"],
    }


def get_repo_installation(emu: GitHubEmulator, call: _Call, owner: str, name: str) -> Result:
    app = call.app()
    for installation_id, repos in app.installations.items():
        if f"{owner}/{name}" in repos:
            return 200, _installation_json(emu, app, installation_id), {}
    raise HTTPError(404, "Not Found")


def create_installation_token(emu: GitHubEmulator, call: _Call, installation_id: str) -> Result:
    app = call.app()
    if int(installation_id) not in app.installations:
        raise HTTPError(404, "Not Found")
    token = f"ghs_{secrets.token_hex(18)}"
    expires_at = _now() + timedelta(hours=1)
    emu._credentials[token] = _Credential(app.bot_login, int(installation_id), expires_at)
    return (
        201,
        {
            "token": token,
            "expires_at": _iso(expires_at),
            "permissions": {"pull_requests": "write", "statuses": "write", "contents": "read"},
            "repository_selection": "selected",
        },
        {},
    )


_REPO = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], Callable[..., Result]]] = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", r"/user", get_user),
        ("GET", r"/rate_limit", get_rate_limit),
        ("GET", _REPO, get_repo),
        ("GET", _REPO + r"/pulls", list_pulls),
        ("POST", _REPO + r"/pulls", create_pull),
        ("GET", _REPO + r"/pulls/(?P<number>\d+)", get_pull),
        ("GET", _REPO + r"/pulls/(?P<number>\d+)/reviews", list_reviews),
        ("GET", _REPO + r"/pulls/(?P<number>\d+)/files", list_pull_files),
        ("GET", _REPO + r"/issues/(?P<number>\d+)/comments", list_issue_comments),
        ("POST", _REPO + r"/issues/(?P<number>\d+)/comments", create_issue_comment),
        ("GET", _REPO + r"/issues/comments/(?P<cid>\d+)", get_issue_comment),
        ("PATCH", _REPO + r"/issues/comments/(?P<cid>\d+)", edit_issue_comment),
        ("GET", _REPO + r"/issues/comments/(?P<cid>\d+)/reactions", list_reactions),
        ("POST", _REPO + r"/issues/comments/(?P<cid>\d+)/reactions", create_reaction),
        ("POST", _REPO + r"/statuses/(?P<sha>[^/]+)", create_status),
        ("GET", _REPO + r"/commits/(?P<sha>[^/]+)/statuses", list_statuses),
        ("GET", _REPO + r"/commits/(?P<sha>[^/]+)/status", combined_status),
        ("GET", _REPO + r"/commits/(?P<sha>[^/]+)/comments", list_commit_comments),
        ("POST", _REPO + r"/commits/(?P<sha>[^/]+)/comments", create_commit_comment),
        ("GET", _REPO + r"/comments/(?P<cid>\d+)", get_commit_comment),
        ("PATCH", _REPO + r"/comments/(?P<cid>\d+)", edit_commit_comment),
        ("GET", _REPO + r"/collaborators/(?P<user>[^/]+)/permission", get_permission),
        (
            "GET",
            r"/orgs/(?P<org>[^/]+)/teams/(?P<slug>[^/]+)/memberships/(?P<user>[^/]+)",
            get_team_membership,
        ),
        ("GET", r"/app", get_app),
        ("GET", _REPO + r"/installation", get_repo_installation),
        (
            "POST",
            r"/app/installations/(?P<installation_id>\d+)/access_tokens",
            create_installation_token,
        ),
    ]
]


# ---------------------------------------------------------------------------
# HTTP plumbing


def _make_handler(emu: GitHubEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "GitHub.com"

        def setup(self) -> None:
            # Without TCP_NODELAY keep-alive requests stall ~40 ms (Nagle vs delayed ACK).
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().setup()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            split = urlsplit(self.path)
            query = dict(parse_qsl(split.query))
            path = split.path
            request_id = secrets.token_hex(8).upper()
            if emu.base_path:
                if not (path == emu.base_path or path.startswith(emu.base_path + "/")):
                    headers = {**emu._rate_headers("anonymous"), "X-GitHub-Request-Id": request_id}
                    self._record(method, path, query, 404, None)
                    self._send(404, {"message": "Not Found", "documentation_url": DOCS}, headers)
                    return
                path = path[len(emu.base_path) :] or "/"
            if emu.latency_s:
                emu._stopping.wait(emu.latency_s)
            # Faults come from the infrastructure in front of the API: before auth.
            fault = emu._take_fault(method, path)
            if fault is not None and fault.kind in ("drop", "stall"):
                self._record(method, path, query, None, None)
                if fault.kind == "stall":
                    emu._stopping.wait(fault.seconds)
                self._drop()
                return
            key, login = "anonymous", None
            try:
                if fault is not None:
                    status, payload, headers = self._fault_answer(fault, key, request_id)
                else:
                    key, credential = emu._authenticate(self.headers.get("Authorization"))
                    login = credential.login if isinstance(credential, _Credential) else None
                    body = json.loads(raw) if raw else None
                    status, payload, headers = emu._serve(method, path, query, body, credential)
                    headers = {**emu._rate_headers(key), **headers}
            except HTTPError as exc:
                status, headers = exc.status, emu._rate_headers(key)
                payload = {"message": exc.message, "documentation_url": DOCS, **exc.extra}
            except json.JSONDecodeError:
                status, headers = 400, emu._rate_headers(key)
                payload = {"message": "Problems parsing JSON", "documentation_url": DOCS}
            headers["X-GitHub-Request-Id"] = request_id
            self._record(method, path, query, status, login)
            self._send(status, payload, headers)

        def _fault_answer(self, fault: Fault, key: str, request_id: str) -> Result:
            headers = emu._rate_headers(key)
            if fault.kind == "error":
                return fault.status, {"message": "Server Error", "documentation_url": DOCS}, headers
            if fault.kind == "primary_limit":
                reset = int(time.time() + fault.seconds)
                headers = emu._rate_headers(key, exhausted_until=reset)
                message = "API rate limit exceeded for user. (But here's the good news: ...)"
                return 403, {"message": message, "documentation_url": DOCS}, headers
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            message = SECONDARY_LIMIT_MESSAGE.format(request_id=request_id)
            return fault.status, {"message": message, "documentation_url": DOCS}, headers

        def _record(
            self,
            method: str,
            path: str,
            query: dict[str, str],
            status: int | None,
            login: str | None,
        ) -> None:
            with emu._lock:
                emu.requests.append(RecordedRequest(method, path, query, status, login))

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                return

        def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-GitHub-Media-Type", "github.v3; format=json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def running(**kwargs: Any) -> Iterator[GitHubEmulator]:
    """``with running(base_path="/api/v3") as gh: ...``"""
    emulator = GitHubEmulator(**kwargs)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()

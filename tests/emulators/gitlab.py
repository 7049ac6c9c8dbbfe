"""An emulator of the GitLab REST API v4, for the calls Sluice makes.

It speaks real HTTP on 127.0.0.1 and follows the published API: paths (numeric or
URL-encoded project ids), status codes, error bodies (``{"message": ...}`` or
``{"error": ...}``), offset pagination (``X-Page`` … ``X-Total-Pages`` and ``Link``),
``RateLimit-*`` headers and 429 with ``Retry-After``, token auth (``PRIVATE-TOKEN`` or
``Authorization: Bearer``). It reproduces the behaviours of real GitLab that trip
clients: notes come newest first, a second ``pending`` status for the same name and
SHA is a 400, awarding the same emoji twice is a 404, inherited members are only
visible through ``/members/all``.

Tests seed state with the ``add_*`` methods, inspect what the product wrote with
``notes()``, ``commit_comments()``, ``statuses()``, ``awards()`` and ``requests``, and inject faults with
``script_faults()`` / ``fail_randomly()`` and ``latency_s``. Drive it only through
python-gitlab (or the product's GitLab backend).

A project's branches are seeded with ``add_branch`` or, when its ``http_url`` is a local
bare git repository, read from that repository (as GitLab knows what was pushed).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

GUEST, REPORTER, DEVELOPER, MAINTAINER, OWNER = 10, 20, 30, 40, 50

NOTE_MAX_CHARS = 1_000_000
KNOWN_EMOJI = frozenset(
    {
        "thumbsup",
        "thumbsdown",
        "eyes",
        "confused",
        "rocket",
        "tada",
        "heart",
        "smile",
        "laughing",
        "white_check_mark",
        "x",
        "hourglass",
    }  # fmt: skip
)
STATUS_STATES = ("pending", "running", "success", "failed", "canceled")
# The state-machine event GitLab fires for each requested state, and the job states
# each event may leave (GenericCommitStatus / CommitStatus in the GitLab source).
_EVENTS = {
    "pending": "enqueue",
    "running": "run",
    "success": "success",
    "failed": "drop",
    "canceled": "cancel",
}
_EVENT_FROM = {
    "enqueue": {"created"},
    "run": {"created", "pending"},
    "success": {"created", "pending", "running"},
    "drop": {"created", "pending", "running"},
    "cancel": {"created", "pending", "running"},
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------- state


@dataclass
class User:
    id: int
    username: str
    name: str
    state: str = "active"


@dataclass
class Group:
    id: int
    full_path: str
    parent: Group | None
    members: dict[int, int] = field(default_factory=dict)  # user id -> access level

    @property
    def name(self) -> str:
        return self.full_path.rsplit("/", 1)[-1]

    def lineage(self) -> Iterator[Group]:
        group: Group | None = self
        while group is not None:
            yield group
            group = group.parent


@dataclass
class FileChange:
    old_path: str
    new_path: str
    new_file: bool = False
    deleted_file: bool = False
    renamed_file: bool = False
    diff: str = ""

    @classmethod
    def modified(cls, path: str) -> FileChange:
        return cls(path, path, diff="@@ -1 +1 @@\n-old\n+new\n")

    @classmethod
    def added(cls, path: str) -> FileChange:
        return cls(path, path, new_file=True, diff="@@ -0,0 +1 @@\n+new\n")

    @classmethod
    def deleted(cls, path: str) -> FileChange:
        return cls(path, path, deleted_file=True, diff="@@ -1 +0,0 @@\n-old\n")

    @classmethod
    def renamed(cls, old: str, new: str) -> FileChange:
        return cls(old, new, renamed_file=True)


@dataclass
class Award:
    id: int
    name: str
    user: User
    created_at: str


@dataclass
class Note:
    id: int
    body: str
    author: User
    system: bool
    created_at: str
    updated_at: str
    awards: list[Award] = field(default_factory=list)


@dataclass
class CommitComment:
    """A comment on a whole commit. GitLab's commit comments API gives it no id."""

    sha: str
    note: str
    author: User
    created_at: str


@dataclass
class CommitStatus:
    id: int
    sha: str
    name: str
    state: str
    description: str | None
    target_url: str | None
    ref: str | None
    author: User
    created_at: str
    updated_at: str


@dataclass
class Project:
    id: int
    path_with_namespace: str
    http_url: str
    default_branch: str
    namespace: Group | None
    members: dict[int, int] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    commits: set[str] = field(default_factory=set)
    merge_requests: dict[int, MergeRequest] = field(default_factory=dict)
    statuses: list[CommitStatus] = field(default_factory=list)
    commit_comments: list[CommitComment] = field(default_factory=list)
    forked_from: Project | None = None

    @property
    def name(self) -> str:
        return self.path_with_namespace.rsplit("/", 1)[-1]

    def has_commit(self, sha: str) -> bool:
        """A seeded commit, else one in the local bare repo behind ``http_url``."""
        if sha in self.commits:
            return True
        if not os.path.isdir(self.http_url):
            return False
        proc = subprocess.run(
            ["git", "--git-dir", self.http_url, "cat-file", "-t", sha],
            capture_output=True,
            timeout=30,
        )
        return proc.stdout.strip() == b"commit"

    def branch_sha(self, branch: str) -> str | None:
        """A seeded branch, else the branch in the local bare repo behind ``http_url``."""
        if branch in self.branches:
            return self.branches[branch]
        if not os.path.isdir(self.http_url):
            return None
        proc = subprocess.run(
            ["git", "--git-dir", self.http_url, "rev-parse", "--verify", "--quiet",
             f"refs/heads/{branch}^{{commit}}"],
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        return proc.stdout.decode().strip() or None


@dataclass
class MergeRequest:
    id: int
    iid: int
    project: Project  # the target project
    source_project: Project
    title: str
    author: User
    source_branch: str
    target_branch: str
    sha: str
    base_sha: str | None
    start_sha: str | None
    state: str
    draft: bool
    changes: list[FileChange]
    merge_commit_sha: str | None
    squash_commit_sha: str | None
    description: str
    created_at: str
    updated_at: str
    notes: list[Note] = field(default_factory=list)
    approved_by: list[User] = field(default_factory=list)

    @property
    def is_fork(self) -> bool:
        return self.source_project.id != self.project.id


@dataclass(frozen=True)
class Fault:
    """One injected failure. ``method``/``path`` (a substring of the API path) narrow it."""

    kind: Literal["status", "drop", "timeout", "lost"]
    status: int = 500
    retry_after: float | None = None
    hold_s: float = 0.0
    method: str | None = None
    path: str | None = None

    @classmethod
    def server_error(cls, status: int = 500, **match: str) -> Fault:
        return cls("status", status=status, **match)

    @classmethod
    def rate_limited(cls, retry_after: float = 1, **match: str) -> Fault:
        return cls("status", status=429, retry_after=retry_after, **match)

    @classmethod
    def drop(cls, **match: str) -> Fault:
        """Close the connection after reading the request, without an answer."""
        return cls("drop", **match)

    @classmethod
    def lost_response(cls, **match: str) -> Fault:
        """Carry the request out, then close the connection instead of answering."""
        return cls("lost", **match)

    @classmethod
    def timeout(cls, hold_s: float = 1.0, **match: str) -> Fault:
        """Hold the request for ``hold_s`` (longer than the client's timeout), then drop."""
        return cls("timeout", hold_s=hold_s, **match)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or self.path in path


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str  # the API path after /api/v4, still URL-encoded
    query: dict[str, str]
    status: int  # 0 when the connection was dropped


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _not_found(what: str | None = None) -> ApiError:
    return ApiError(404, {"message": f"404 {what} Not Found" if what else "404 Not found"})


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, emulator: GitLabEmulator):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.emulator = emulator

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # Without this, keep-alive requests stall ~40 ms on Nagle + delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.emulator._serve(self)

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@dataclass
class _Request:
    method: str
    segments: list[str]  # decoded path segments after /api/v4
    raw_path: str
    query: dict[str, str]
    body: dict[str, Any]
    host: str
    user: User


_Route = tuple[str, tuple[str, ...], Callable[["GitLabEmulator", _Request, dict[str, str]], Any]]


# ------------------------------------------------------------------------- emulator


class GitLabEmulator:
    """A GitLab REST API v4 server with in-memory state. Use as a context manager."""

    def __init__(
        self,
        *,
        token: str = "glpat-emulator-token",
        bot_username: str = "sluice-bot",
        url_prefix: str = "",
        diffs_endpoint: bool = True,
        changes_limit: int = 1000,
        rate_limit: int = 2000,
        rate_window_s: float = 60.0,
    ) -> None:
        self.url_prefix = url_prefix.rstrip("/")
        # GitLab before 15.7 has no /merge_requests/:iid/diffs (only /changes).
        self.diffs_endpoint = diffs_endpoint
        self.changes_limit = changes_limit
        self.rate_limit = rate_limit
        self.rate_window_s = rate_window_s
        self.latency_s = 0.0
        self.requests: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._ids = iter(range(1000, 10**9))
        self._users: dict[int, User] = {}
        self._tokens: dict[str, int] = {}
        self._groups: dict[int, Group] = {}
        self._projects: dict[int, Project] = {}
        self._scripted: list[Fault] = []
        self._random_fault: tuple[float, tuple[Fault, ...], random.Random] | None = None
        self._window: list[float] = []
        self.bot = self.add_user(bot_username)
        self.add_token(token, self.bot)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> GitLabEmulator:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> GitLabEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The instance URL to give a client (python-gitlab adds /api/v4)."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.url_prefix}"

    # -- seeding

    def _next_id(self) -> int:
        return next(self._ids)

    def add_user(self, username: str, *, name: str | None = None) -> User:
        with self._lock:
            user = User(self._next_id(), username, name or username.title())
            self._users[user.id] = user
            return user

    def add_token(self, token: str, user: User) -> None:
        with self._lock:
            self._tokens[token] = user.id

    def add_group(self, full_path: str) -> Group:
        """Add a group; parents named in the path are created as needed."""
        with self._lock:
            existing = self._find_group(full_path)
            if existing is not None:
                return existing
            parent_path, _, _ = full_path.rpartition("/")
            parent = self.add_group(parent_path) if parent_path else None
            group = Group(self._next_id(), full_path, parent)
            self._groups[group.id] = group
            return group

    def add_project(
        self,
        path_with_namespace: str,
        *,
        id: int | None = None,  # noqa: A002 - GitLab's field name
        http_url: str | None = None,
        default_branch: str = "main",
        forked_from: Project | None = None,
    ) -> Project:
        """Add a project; its namespace is a group (created as needed) unless it is a user's."""
        with self._lock:
            namespace_path = path_with_namespace.rpartition("/")[0]
            is_user_namespace = any(u.username == namespace_path for u in self._users.values())
            namespace = None if is_user_namespace else self.add_group(namespace_path)
            project_id = id if id is not None else self._next_id()
            if project_id in self._projects:
                raise ValueError(f"project id {project_id} already exists")
            project = Project(
                project_id,
                path_with_namespace,
                http_url or f"{self._web_base()}/{path_with_namespace}.git",
                default_branch,
                namespace,
                forked_from=forked_from,
            )
            self._projects[project.id] = project
            return project

    def add_branch(self, project: Project, name: str, sha: str) -> None:
        with self._lock:
            project.branches[name] = sha
            project.commits.add(sha)

    def add_commit(self, project: Project, sha: str) -> None:
        with self._lock:
            project.commits.add(sha)

    def add_member(self, target: Project | Group, user: User, access_level: int) -> None:
        """A direct membership of ``user`` in a project or group."""
        with self._lock:
            target.members[user.id] = access_level

    def add_merge_request(
        self,
        project: Project,
        *,
        source_branch: str,
        target_branch: str,
        sha: str,
        base_sha: str | None,
        author: User,
        iid: int | None = None,
        title: str = "Change",
        source_project: Project | None = None,
        start_sha: str | None = None,
        draft: bool = False,
        state: str = "opened",
        changes: list[FileChange] | None = None,
        merge_commit_sha: str | None = None,
        squash_commit_sha: str | None = None,
        description: str = "",
    ) -> MergeRequest:
        """Add an MR to ``project`` (the target). ``base_sha=None`` means diff_refs not ready."""
        with self._lock:
            source = source_project or project
            mr_iid = iid if iid is not None else len(project.merge_requests) + 1
            now = _now()
            mr = MergeRequest(
                self._next_id(),
                mr_iid,
                project,
                source,
                title,
                author,
                source_branch,
                target_branch,
                sha,
                base_sha,
                start_sha or base_sha,
                state,
                draft,
                list(changes or []),
                merge_commit_sha,
                squash_commit_sha,
                description,
                now,
                now,
            )
            project.merge_requests[mr_iid] = mr
            # The target keeps refs/merge-requests/:iid/head, so the head SHA exists there too.
            for p in {project.id: project, source.id: source}.values():
                p.commits.add(sha)
            source.branches.setdefault(source_branch, sha)
            if base_sha:
                project.commits.add(base_sha)
            if merge_commit_sha:
                project.commits.add(merge_commit_sha)
            return mr

    def add_note(self, mr: MergeRequest, body: str, *, author: User, system: bool = False) -> Note:
        with self._lock:
            now = _now()
            note = Note(self._next_id(), body, author, system, now, now)
            mr.notes.append(note)
            return note

    def approve(self, mr: MergeRequest, user: User) -> None:
        """``user`` approves ``mr`` (POST .../approve); approving twice changes nothing."""
        with self._lock:
            if all(u.id != user.id for u in mr.approved_by):
                mr.approved_by.append(user)

    def merge(
        self, mr: MergeRequest, merge_commit_sha: str | None = None, *, user: User | None = None
    ) -> str:
        """Merge ``mr`` and return its merge commit.

        With ``merge_commit_sha`` the merge happened in git already (the test made it);
        without, the emulator makes it as GitLab's merge button does (merge method "merge
        commit"): an UNSIGNED ``--no-ff`` merge of the head into the target branch of the
        bare repository behind ``http_url``, authored by ``user`` (default: the author).
        """
        with self._lock:
            if merge_commit_sha is None:
                merge_commit_sha = self._merge_in_git(mr, user or mr.author)
            mr.state = "merged"
            mr.merge_commit_sha = merge_commit_sha
            mr.project.commits.add(merge_commit_sha)
            mr.project.branches[mr.target_branch] = merge_commit_sha
            return merge_commit_sha

    def _merge_in_git(self, mr: MergeRequest, user: User) -> str:
        repo = mr.project.http_url
        if not os.path.isdir(repo):
            raise ValueError(f"{mr.project.path_with_namespace} has no local bare repository")
        target = mr.project.branch_sha(mr.target_branch)
        if target is None:
            raise ValueError(f"target branch {mr.target_branch!r} does not exist")
        email = f"{user.username}@example.com"
        env = {**os.environ, "GIT_AUTHOR_NAME": user.name, "GIT_AUTHOR_EMAIL": email,
               "GIT_COMMITTER_NAME": user.name, "GIT_COMMITTER_EMAIL": email}  # fmt: skip

        def git(*args: str) -> str:
            proc = subprocess.run(["git", "--git-dir", repo, "-c", "commit.gpgSign=false", *args],
                                  capture_output=True, text=True, env=env, timeout=30)  # fmt: skip
            if proc.returncode != 0:
                # What GitLab answers as 406 "Branch cannot be merged".
                raise ValueError(f"!{mr.iid} cannot be merged: {proc.stdout}{proc.stderr}")
            return proc.stdout.strip()

        tree = git("merge-tree", "--write-tree", target, mr.sha).splitlines()[0]
        message = (
            f"Merge branch '{mr.source_branch}' into '{mr.target_branch}'\n\n{mr.title}\n\n"
            f"See merge request {mr.project.path_with_namespace}!{mr.iid}"
        )
        sha = git("commit-tree", tree, "-p", target, "-p", mr.sha, "-m", message)
        git("update-ref", f"refs/heads/{mr.target_branch}", sha, target)
        return sha

    def merge_requests(self, project: Project) -> list[MergeRequest]:
        with self._lock:
            return sorted(project.merge_requests.values(), key=lambda m: m.iid)

    # -- inspection

    def notes(self, mr: MergeRequest) -> list[Note]:
        """Notes on ``mr`` in creation order."""
        with self._lock:
            return list(mr.notes)

    def commit_comments(self, project: Project, sha: str) -> list[CommitComment]:
        """Comments on commit ``sha`` in creation order."""
        with self._lock:
            return [c for c in project.commit_comments if c.sha == sha]

    def statuses(self, project: Project, sha: str) -> list[CommitStatus]:
        """Every status ever posted for ``sha`` (all jobs), in creation order."""
        with self._lock:
            return [s for s in project.statuses if s.sha == sha]

    def latest_statuses(self, project: Project, sha: str) -> dict[str, CommitStatus]:
        """The current status per name for ``sha``."""
        latest: dict[str, CommitStatus] = {}
        for status in self.statuses(project, sha):
            latest[status.name] = status
        return latest

    def awards(self, note: Note) -> list[Award]:
        with self._lock:
            return list(note.awards)

    def request_count(self, method: str | None = None, path_contains: str = "") -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and path_contains in r.path
            )

    # -- fault injection

    def script_faults(self, *faults: Fault) -> None:
        """Queue faults; each is used once, by the first request it matches, in order."""
        with self._lock:
            self._scripted.extend(faults)

    def fail_randomly(self, fraction: float, *faults: Fault, seed: int = 0) -> None:
        """Fail ``fraction`` of the requests with one of ``faults`` (1.0: every one they match)."""
        if not faults:
            raise ValueError("fail_randomly needs at least one fault")
        with self._lock:
            self._random_fault = (fraction, faults, random.Random(seed))

    def clear_faults(self) -> None:
        with self._lock:
            self._scripted.clear()
            self._random_fault = None
            self.latency_s = 0.0

    def _pick_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._scripted):
                if fault.matches(method, path):
                    return self._scripted.pop(index)
            if self._random_fault is not None:
                fraction, faults, rng = self._random_fault
                candidates = [f for f in faults if f.matches(method, path)]
                if candidates and rng.random() < fraction:
                    return rng.choice(candidates)
        return None

    # -- webhook payloads

    def merge_request_hook(
        self,
        mr: MergeRequest,
        *,
        action: str = "open",
        user: User | None = None,
        oldrev: str | None = None,
        git_http_url: str | None = None,
    ) -> dict[str, Any]:
        """A "Merge Request Hook" payload for ``mr`` as GitLab would send it."""
        actor = user or mr.author
        attributes = self._mr_hook_attributes(mr)
        attributes["action"] = action
        if oldrev is not None:
            attributes["oldrev"] = oldrev
        return {
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": self._hook_user(actor),
            "project": self._hook_project(mr.project, git_http_url),
            "repository": self._hook_repository(mr.project, git_http_url),
            "object_attributes": attributes,
            "labels": [],
            "changes": {},
            "assignees": [],
            "reviewers": [],
        }

    def note_hook(
        self, mr: MergeRequest, note: Note, *, git_http_url: str | None = None
    ) -> dict[str, Any]:
        """A "Note Hook" payload for a comment on ``mr``."""
        return {
            "object_kind": "note",
            "event_type": "note",
            "user": self._hook_user(note.author),
            "project_id": mr.project.id,
            "project": self._hook_project(mr.project, git_http_url),
            "repository": self._hook_repository(mr.project, git_http_url),
            "object_attributes": {
                "id": note.id,
                "note": note.body,
                "noteable_type": "MergeRequest",
                "author_id": note.author.id,
                "created_at": note.created_at,
                "updated_at": note.updated_at,
                "project_id": mr.project.id,
                "attachment": None,
                "line_code": None,
                "commit_id": "",
                "noteable_id": mr.id,
                "system": note.system,
                "st_diff": None,
                "action": "create",
                "url": f"{self._mr_web_url(mr)}#note_{note.id}",
            },
            "merge_request": self._mr_hook_attributes(mr),
        }

    def push_hook(
        self,
        project: Project,
        *,
        ref: str = "refs/heads/main",
        before: str,
        after: str,
        user: User | None = None,
        git_http_url: str | None = None,
    ) -> dict[str, Any]:
        """A "Push Hook" payload (GitLab sends tag pushes as "Tag Push Hook")."""
        actor = user or self.bot
        web = self._project_web_url(project)
        deleted = set(after) == {"0"}
        return {
            "object_kind": "push",
            "event_name": "push",
            "before": before,
            "after": after,
            "ref": ref,
            "ref_protected": ref == f"refs/heads/{project.default_branch}",
            "checkout_sha": None if deleted else after,
            "message": None,
            "user_id": actor.id,
            "user_name": actor.name,
            "user_username": actor.username,
            "user_email": "",
            "user_avatar": None,
            "project_id": project.id,
            "project": self._hook_project(project, git_http_url),
            "commits": [] if deleted else [{"id": after, "url": f"{web}/-/commit/{after}"}],
            "total_commits_count": 0 if deleted else 1,
            "push_options": {},
            "repository": {
                **self._hook_repository(project, git_http_url),
                "git_http_url": git_http_url or project.http_url,
                "git_ssh_url": f"git@127.0.0.1:{project.path_with_namespace}.git",
                "visibility_level": 0,
            },
        }

    def _mr_hook_attributes(self, mr: MergeRequest) -> dict[str, Any]:
        return {
            "id": mr.id,
            "iid": mr.iid,
            "title": mr.title,
            "description": mr.description,
            "author_id": mr.author.id,
            "state": mr.state,
            "draft": mr.draft,
            "work_in_progress": mr.draft,
            "source_branch": mr.source_branch,
            "target_branch": mr.target_branch,
            "source_project_id": mr.source_project.id,
            "target_project_id": mr.project.id,
            "source": self._hook_project(mr.source_project, None),
            "target": self._hook_project(mr.project, None),
            "last_commit": {
                "id": mr.sha,
                "message": mr.title,
                "title": mr.title,
                "timestamp": mr.updated_at,
                "url": f"{self._project_web_url(mr.source_project)}/-/commit/{mr.sha}",
                "author": {"name": mr.author.name, "email": f"{mr.author.username}@example.com"},
            },
            "merge_commit_sha": mr.merge_commit_sha,
            "merge_status": "can_be_merged",
            "detailed_merge_status": "mergeable",
            "created_at": mr.created_at,
            "updated_at": mr.updated_at,
            "url": self._mr_web_url(mr),
        }

    def _hook_user(self, user: User) -> dict[str, Any]:
        return {
            "id": user.id,
            "name": user.name,
            "username": user.username,
            "avatar_url": None,
            "email": "[REDACTED]",
        }

    def _hook_project(self, project: Project, git_http_url: str | None) -> dict[str, Any]:
        web = self._project_web_url(project)
        http_url = git_http_url or project.http_url
        return {
            "id": project.id,
            "name": project.name,
            "description": "",
            "web_url": web,
            "avatar_url": None,
            "git_ssh_url": f"git@127.0.0.1:{project.path_with_namespace}.git",
            "git_http_url": http_url,
            "namespace": project.path_with_namespace.rpartition("/")[0],
            "visibility_level": 0,
            "path_with_namespace": project.path_with_namespace,
            "default_branch": project.default_branch,
            "ci_config_path": None,
            "homepage": web,
            "url": http_url,
            "ssh_url": f"git@127.0.0.1:{project.path_with_namespace}.git",
            "http_url": http_url,
        }

    def _hook_repository(self, project: Project, git_http_url: str | None) -> dict[str, Any]:
        web = self._project_web_url(project)
        return {
            "name": project.name,
            "url": git_http_url or project.http_url,
            "description": "",
            "homepage": web,
        }

    # -- HTTP plumbing

    def _web_base(self) -> str:
        return self.url if self._server is not None else f"http://gitlab.invalid{self.url_prefix}"

    def _project_web_url(self, project: Project) -> str:
        return f"{self._web_base()}/{project.path_with_namespace}"

    def _mr_web_url(self, mr: MergeRequest) -> str:
        return f"{self._project_web_url(mr.project)}/-/merge_requests/{mr.iid}"

    def _serve(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw_body = handler.rfile.read(length) if length else b""
        split = urlsplit(handler.path)
        api_root = f"{self.url_prefix}/api/v4"
        method = handler.command
        path = split.path[len(api_root) :] if split.path.startswith(api_root + "/") else split.path
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        if self.latency_s:
            time.sleep(self.latency_s)
        fault = self._pick_fault(method, path)
        if fault is not None and fault.kind in ("drop", "timeout"):
            self._record(method, path, query, 0)
            if fault.kind == "timeout":
                time.sleep(fault.hold_s)
            handler.close_connection = True
            return
        try:
            if fault is not None and fault.kind == "status":
                raise self._fault_error(fault)
            self._check_rate_limit()
            user = self._authenticate(handler)
            if not split.path.startswith(api_root + "/"):
                raise ApiError(404, {"error": "404 Not Found"})
            request = _Request(
                method,
                [unquote(s) for s in path.strip("/").split("/")],
                path,
                query,
                self._parse_body(handler, raw_body, query),
                handler.headers.get("Host", ""),
                user,
            )
            status, payload, headers = self._dispatch(request)
        except ApiError as exc:
            status, payload, headers = exc.status, exc.body, exc.headers
        if fault is not None and fault.kind == "lost":
            self._record(method, path, query, 0)
            handler.close_connection = True
            return
        self._record(method, path, query, status)
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in {**self._rate_headers(), **headers}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _record(self, method: str, path: str, query: dict[str, str], status: int) -> None:
        with self._lock:
            self.requests.append(RequestRecord(method, path, query, status))

    def _fault_error(self, fault: Fault) -> ApiError:
        reasons = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                   503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip
        reason = reasons.get(fault.status, "Error")
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.status == 429:
            return ApiError(
                429, {"message": "Retry later"}, {**headers, "RateLimit-Remaining": "0"}
            )
        return ApiError(fault.status, {"message": f"{fault.status} {reason}"}, headers)

    def _check_rate_limit(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._window = [t for t in self._window if now - t < self.rate_window_s]
            if len(self._window) >= self.rate_limit:
                retry_after = max(1, round(self.rate_window_s - (now - self._window[0])))
                raise ApiError(429, {"message": "Retry later"}, {"Retry-After": str(retry_after)})
            self._window.append(now)

    def _rate_headers(self) -> dict[str, str]:
        with self._lock:
            observed = len(self._window)
        reset = int(time.time() + self.rate_window_s)
        return {
            "RateLimit-Limit": str(self.rate_limit),
            "RateLimit-Observed": str(observed),
            "RateLimit-Remaining": str(max(0, self.rate_limit - observed)),
            "RateLimit-Reset": str(reset),
            "RateLimit-ResetTime": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(reset)),
        }

    def _authenticate(self, handler: _Handler) -> User:
        token = handler.headers.get("PRIVATE-TOKEN")
        authorization = handler.headers.get("Authorization", "")
        if token is None and authorization.startswith("Bearer "):
            token = authorization[len("Bearer ") :]
        with self._lock:
            user_id = self._tokens.get(token or "")
            if user_id is None:
                raise ApiError(401, {"message": "401 Unauthorized"})
            return self._users[user_id]

    @staticmethod
    def _parse_body(handler: _Handler, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        # Grape merges query parameters and the body; the body wins.
        params: dict[str, Any] = dict(query)
        if not raw:
            return params
        content_type = handler.headers.get("Content-Type", "")
        if "json" in content_type:
            try:
                parsed = json.loads(raw)
            except ValueError:
                raise ApiError(400, {"error": "invalid JSON body"}) from None
            if isinstance(parsed, dict):
                params.update(parsed)
        else:
            params.update({k: v[-1] for k, v in parse_qs(raw.decode()).items()})
        return params

    def _dispatch(self, request: _Request) -> tuple[int, Any, dict[str, str]]:
        for method, pattern, action in _ROUTES:
            if method != request.method or len(pattern) != len(request.segments):
                continue
            params: dict[str, str] = {}
            for part, segment in zip(pattern, request.segments, strict=True):
                if part.startswith(":"):
                    params[part[1:]] = segment
                elif part != segment:
                    break
            else:
                with self._lock:
                    result = action(self, request, params)
                if isinstance(result, tuple):
                    return result
                return (201 if method == "POST" else 200), result, {}
        raise ApiError(404, {"error": "404 Not Found"})

    def _paginate(
        self, request: _Request, items: list[Any]
    ) -> tuple[int, list[Any], dict[str, str]]:
        try:
            page = max(1, int(request.query.get("page", 1)))
            per_page = min(100, max(1, int(request.query.get("per_page", 20))))
        except ValueError:
            raise ApiError(400, {"error": "page is invalid, per_page is invalid"}) from None
        total = len(items)
        total_pages = max(1, -(-total // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        base = f"http://{request.host}{self.url_prefix}/api/v4{request.raw_path}"

        def link(number: int) -> str:
            return f"{base}?{urlencode({**request.query, 'page': number, 'per_page': per_page})}"

        links = []
        if page < total_pages:
            links.append(f'<{link(page + 1)}>; rel="next"')
        if page > 1:
            links.append(f'<{link(page - 1)}>; rel="prev"')
        links.append(f'<{link(1)}>; rel="first"')
        links.append(f'<{link(total_pages)}>; rel="last"')
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Next-Page": str(page + 1) if page < total_pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
            "X-Total": str(total),
            "X-Total-Pages": str(total_pages),
            "Link": ", ".join(links),
        }
        return 200, chunk, headers

    # -- lookups

    def _find_group(self, ref: str) -> Group | None:
        if ref.isdigit():
            return self._groups.get(int(ref))
        for group in self._groups.values():
            if group.full_path.lower() == ref.lower():
                return group
        return None

    def _group(self, ref: str) -> Group:
        group = self._find_group(ref)
        if group is None:
            raise _not_found("Group")
        return group

    def _project(self, ref: str) -> Project:
        if ref.isdigit():
            project = self._projects.get(int(ref))
        else:
            project = next(
                (
                    p
                    for p in self._projects.values()
                    if p.path_with_namespace.lower() == ref.lower()
                ),
                None,
            )
        if project is None:
            raise _not_found("Project")
        return project

    def _mr(self, params: dict[str, str]) -> MergeRequest:
        project = self._project(params["project"])
        try:
            return project.merge_requests[int(params["iid"])]
        except (KeyError, ValueError):
            raise _not_found() from None

    def _note(self, params: dict[str, str]) -> tuple[MergeRequest, Note]:
        mr = self._mr(params)
        for note in mr.notes:
            if str(note.id) == params["note_id"]:
                return mr, note
        raise _not_found("Note")

    def _user_by_id(self, ref: str) -> User:
        user = self._users.get(int(ref)) if ref.isdigit() else None
        if user is None:
            raise _not_found("User")
        return user

    # -- JSON shapes

    def _user_json(self, user: User) -> dict[str, Any]:
        return {
            "id": user.id,
            "username": user.username,
            "name": user.name,
            "state": user.state,
            "locked": False,
            "avatar_url": None,
            "web_url": f"{self._web_base()}/{user.username}",
        }

    def _project_json(self, project: Project) -> dict[str, Any]:
        namespace = project.path_with_namespace.rpartition("/")[0]
        group = project.namespace
        body = {
            "id": project.id,
            "name": project.name,
            "path": project.name,
            "path_with_namespace": project.path_with_namespace,
            "name_with_namespace": project.path_with_namespace.replace("/", " / "),
            "default_branch": project.default_branch,
            "http_url_to_repo": project.http_url,
            "ssh_url_to_repo": f"git@127.0.0.1:{project.path_with_namespace}.git",
            "web_url": self._project_web_url(project),
            "visibility": "private",
            "archived": False,
            "namespace": {
                "id": group.id if group else None,
                "name": namespace.rpartition("/")[2],
                "path": namespace.rpartition("/")[2],
                "kind": "group" if group else "user",
                "full_path": namespace,
            },
        }
        if project.forked_from is not None:
            body["forked_from_project"] = {
                "id": project.forked_from.id,
                "path_with_namespace": project.forked_from.path_with_namespace,
            }
        return body

    def _mr_json(self, mr: MergeRequest) -> dict[str, Any]:
        diff_refs = (
            {"base_sha": mr.base_sha, "head_sha": mr.sha, "start_sha": mr.start_sha}
            if mr.base_sha
            else None
        )
        return {
            "id": mr.id,
            "iid": mr.iid,
            "project_id": mr.project.id,
            "title": mr.title,
            "description": mr.description,
            "state": mr.state,
            "created_at": mr.created_at,
            "updated_at": mr.updated_at,
            "target_branch": mr.target_branch,
            "source_branch": mr.source_branch,
            "author": self._user_json(mr.author),
            "source_project_id": mr.source_project.id,
            "target_project_id": mr.project.id,
            "labels": [],
            "draft": mr.draft,
            "work_in_progress": mr.draft,
            "merge_status": "can_be_merged",
            "detailed_merge_status": "mergeable",
            "sha": mr.sha,
            "merge_commit_sha": mr.merge_commit_sha,
            "squash_commit_sha": mr.squash_commit_sha,
            "user_notes_count": sum(1 for n in mr.notes if not n.system),
            "web_url": self._mr_web_url(mr),
            "references": {
                "short": f"!{mr.iid}",
                "full": f"{mr.project.path_with_namespace}!{mr.iid}",
            },
            "diff_refs": diff_refs,
            "changes_count": str(len(mr.changes)),
        }

    @staticmethod
    def _change_json(change: FileChange) -> dict[str, Any]:
        return {
            "old_path": change.old_path,
            "new_path": change.new_path,
            "a_mode": "0" if change.new_file else "100644",
            "b_mode": "0" if change.deleted_file else "100644",
            "new_file": change.new_file,
            "renamed_file": change.renamed_file,
            "deleted_file": change.deleted_file,
            "generated_file": False,
            "diff": change.diff,
        }

    def _note_json(self, mr: MergeRequest, note: Note) -> dict[str, Any]:
        return {
            "id": note.id,
            "type": None,
            "body": note.body,
            "attachment": None,
            "author": self._user_json(note.author),
            "created_at": note.created_at,
            "updated_at": note.updated_at,
            "system": note.system,
            "noteable_id": mr.id,
            "noteable_type": "MergeRequest",
            "project_id": mr.project.id,
            "noteable_iid": mr.iid,
            "resolvable": False,
            "confidential": False,
            "internal": False,
            "commands_changes": {},
        }

    def _award_json(self, note: Note, award: Award) -> dict[str, Any]:
        return {
            "id": award.id,
            "name": award.name,
            "user": self._user_json(award.user),
            "created_at": award.created_at,
            "updated_at": award.created_at,
            "awardable_id": note.id,
            "awardable_type": "Note",
        }

    def _commit_comment_json(self, comment: CommitComment) -> dict[str, Any]:
        return {
            "note": comment.note,
            "path": None,
            "line": None,
            "line_type": None,
            "author": self._user_json(comment.author),
            "created_at": comment.created_at,
        }

    def _status_json(self, status: CommitStatus) -> dict[str, Any]:
        finished = status.state in ("success", "failed", "canceled")
        return {
            "id": status.id,
            "sha": status.sha,
            "ref": status.ref,
            "status": status.state,
            "name": status.name,
            "target_url": status.target_url,
            "description": status.description,
            "created_at": status.created_at,
            "started_at": status.updated_at if status.state != "pending" else None,
            "finished_at": status.updated_at if finished else None,
            "allow_failure": False,
            "coverage": None,
            "author": self._user_json(status.author),
        }

    def _member_json(self, user: User, access_level: int) -> dict[str, Any]:
        return {
            **self._user_json(user),
            "access_level": access_level,
            "created_at": "2024-01-01T00:00:00.000Z",
            "expires_at": None,
            "membership_state": "active",
        }

    # -- endpoints

    def _get_current_user(self, request: _Request, params: dict[str, str]) -> Any:
        return {**self._user_json(request.user), "bot": False, "is_admin": False}

    def _list_users(self, request: _Request, params: dict[str, str]) -> Any:
        users = list(self._users.values())
        wanted = request.query.get("username")
        if wanted is not None:
            users = [u for u in users if u.username.lower() == wanted.lower()]
        return self._paginate(request, [self._user_json(u) for u in users])

    def _get_user(self, request: _Request, params: dict[str, str]) -> Any:
        return self._user_json(self._user_by_id(params["user_id"]))

    def _get_project(self, request: _Request, params: dict[str, str]) -> Any:
        return self._project_json(self._project(params["project"]))

    def _get_branch(self, request: _Request, params: dict[str, str]) -> Any:
        project = self._project(params["project"])
        sha = project.branches.get(params["branch"])
        if sha is None:
            raise _not_found("Branch")
        return {
            "name": params["branch"],
            "commit": {"id": sha, "short_id": sha[:8], "title": "commit"},
            "merged": False,
            "protected": params["branch"] == project.default_branch,
            "default": params["branch"] == project.default_branch,
            "web_url": f"{self._project_web_url(project)}/-/tree/{params['branch']}",
        }

    def _get_mr(self, request: _Request, params: dict[str, str]) -> Any:
        return self._mr_json(self._mr(params))

    def _list_mrs(self, request: _Request, params: dict[str, str]) -> Any:
        project = self._project(params["project"])
        state = request.query.get("state", "all")
        if state not in ("opened", "closed", "locked", "merged", "all"):
            raise ApiError(400, {"error": "state does not have a valid value"})
        found = [m for m in project.merge_requests.values() if state in ("all", m.state)]
        for key, attr in (("target_branch", "target_branch"), ("source_branch", "source_branch")):
            if key in request.query:
                found = [m for m in found if getattr(m, attr) == request.query[key]]
        found.sort(key=lambda m: m.created_at, reverse=request.query.get("sort", "desc") == "desc")
        return self._paginate(request, [self._mr_json(m) for m in found])

    def _create_mr(self, request: _Request, params: dict[str, str]) -> Any:
        project = self._project(params["project"])
        for key in ("source_branch", "target_branch", "title"):
            if not request.body.get(key):
                raise ApiError(400, {"error": f"{key} is missing"})
        source, target = str(request.body["source_branch"]), str(request.body["target_branch"])
        sha, base = project.branch_sha(source), project.branch_sha(target)
        if sha is None or base is None:
            missing = source if sha is None else target
            raise ApiError(400, {"message": [f"Branch '{missing}' does not exist"]})
        for other in project.merge_requests.values():
            if (other.source_branch, other.target_branch, other.state) == (
                source,
                target,
                "opened",
            ):
                raise ApiError(
                    409,
                    {"message": [
                        "Another open merge request already exists for this source branch: "
                        f"!{other.iid}"
                    ]},
                )  # fmt: skip
        mr = self.add_merge_request(
            project,
            iid=max(project.merge_requests, default=0) + 1,
            source_branch=source,
            target_branch=target,
            sha=sha,
            base_sha=base,
            author=request.user,
            title=str(request.body["title"]),
            description=str(request.body.get("description") or ""),
        )
        return self._mr_json(mr)

    def _get_mr_approvals(self, request: _Request, params: dict[str, str]) -> Any:
        mr = self._mr(params)
        return {
            "id": mr.id,
            "iid": mr.iid,
            "project_id": mr.project.id,
            "title": mr.title,
            "description": mr.description,
            "state": mr.state,
            "created_at": mr.created_at,
            "updated_at": mr.updated_at,
            "merge_status": "can_be_merged",
            "approved": bool(mr.approved_by),
            "approvals_required": 0,
            "approvals_left": 0,
            "approved_by": [{"user": self._user_json(u)} for u in mr.approved_by],
        }

    def _get_mr_changes(self, request: _Request, params: dict[str, str]) -> Any:
        mr = self._mr(params)
        shown = mr.changes[: self.changes_limit]
        return {
            **self._mr_json(mr),
            "changes": [self._change_json(c) for c in shown],
            "overflow": len(mr.changes) > self.changes_limit,
        }

    def _list_mr_diffs(self, request: _Request, params: dict[str, str]) -> Any:
        if not self.diffs_endpoint:
            raise ApiError(404, {"error": "404 Not Found"})
        mr = self._mr(params)
        return self._paginate(request, [self._change_json(c) for c in mr.changes])

    def _list_notes(self, request: _Request, params: dict[str, str]) -> Any:
        mr = self._mr(params)
        order_by = request.query.get("order_by", "created_at")
        sort = request.query.get("sort", "desc")
        if order_by not in ("created_at", "updated_at") or sort not in ("asc", "desc"):
            raise ApiError(400, {"error": "order_by, sort does not have a valid value"})
        notes = sorted(mr.notes, key=lambda n: (getattr(n, order_by), n.id), reverse=sort == "desc")
        return self._paginate(request, [self._note_json(mr, n) for n in notes])

    def _get_note(self, request: _Request, params: dict[str, str]) -> Any:
        mr, note = self._note(params)
        return self._note_json(mr, note)

    @staticmethod
    def _note_body(request: _Request) -> str:
        body = request.body.get("body")
        if body is None:
            raise ApiError(400, {"error": "body is missing"})
        if not str(body).strip():
            raise ApiError(400, {"message": {"note": ["can't be blank"]}})
        if len(str(body)) > NOTE_MAX_CHARS:
            raise ApiError(
                400,
                {"message": {"note": [f"is too long (maximum is {NOTE_MAX_CHARS} characters)"]}},
            )
        return str(body)

    def _create_note(self, request: _Request, params: dict[str, str]) -> Any:
        mr = self._mr(params)
        body = self._note_body(request)
        now = _now()
        note = Note(self._next_id(), body, request.user, False, now, now)
        mr.notes.append(note)
        return self._note_json(mr, note)

    def _update_note(self, request: _Request, params: dict[str, str]) -> Any:
        mr, note = self._note(params)
        if note.system or note.author.id != request.user.id:
            raise ApiError(403, {"message": "403 Forbidden"})
        note.body = self._note_body(request)
        note.updated_at = _now()
        return self._note_json(mr, note)

    def _list_awards(self, request: _Request, params: dict[str, str]) -> Any:
        _, note = self._note(params)
        return self._paginate(request, [self._award_json(note, a) for a in note.awards])

    def _create_award(self, request: _Request, params: dict[str, str]) -> Any:
        _, note = self._note(params)
        name = request.body.get("name")
        if not name:
            raise ApiError(400, {"error": "name is missing"})
        if name not in KNOWN_EMOJI:
            raise ApiError(400, {"message": {"name": ["is not a valid emoji name"]}})
        if any(a.name == name and a.user.id == request.user.id for a in note.awards):
            raise ApiError(
                404, {"message": "404 Award Emoji Name has already been taken Not Found"}
            )
        award = Award(self._next_id(), name, request.user, _now())
        note.awards.append(award)
        return self._award_json(note, award)

    def _create_status(self, request: _Request, params: dict[str, str]) -> Any:
        project = self._project(params["project"])
        sha = params["sha"]
        state = request.body.get("state")
        if state is None:
            raise ApiError(400, {"error": "state is missing"})
        if state not in STATUS_STATES:
            raise ApiError(400, {"error": "state does not have a valid value"})
        if not project.has_commit(sha):
            raise _not_found("Commit")
        name = str(request.body.get("name") or request.body.get("context") or "default")
        ref = request.body.get("ref") or self._ref_for(project, sha)
        active = next(
            (
                s
                for s in reversed(project.statuses)
                if s.sha == sha and s.name == name and s.ref == ref
                and s.state in ("pending", "running")
            ),
            None,
        )  # fmt: skip
        event = _EVENTS[state]
        now = _now()
        if active is None:
            active = CommitStatus(
                self._next_id(), sha, name, "created", None, None, ref, request.user, now, now
            )
            project.statuses.append(active)
        if active.state not in _EVENT_FROM[event]:
            message = (
                f"Cannot transition status via :{event} from :{active.state} "
                f'(Reason(s): Status cannot transition via "{event}")'
            )
            raise ApiError(400, {"message": message})
        active.state = state
        active.updated_at = now
        if "description" in request.body:
            active.description = request.body["description"]
        if "target_url" in request.body:
            active.target_url = request.body["target_url"]
        return self._status_json(active)

    def _list_commit_comments(self, request: _Request, params: dict[str, str]) -> Any:
        project = self._project(params["project"])
        if not project.has_commit(params["sha"]):
            raise _not_found("Commit")
        found = [c for c in project.commit_comments if c.sha == params["sha"]]
        return self._paginate(request, [self._commit_comment_json(c) for c in found])

    def _create_commit_comment(self, request: _Request, params: dict[str, str]) -> Any:
        project = self._project(params["project"])
        note = request.body.get("note")
        if note is None:
            raise ApiError(400, {"error": "note is missing"})
        if not str(note).strip():
            raise ApiError(400, {"message": {"note": ["can't be blank"]}})
        if not project.has_commit(params["sha"]):
            raise _not_found("Commit")
        comment = CommitComment(params["sha"], str(note), request.user, _now())
        project.commit_comments.append(comment)
        return self._commit_comment_json(comment)

    @staticmethod
    def _ref_for(project: Project, sha: str) -> str | None:
        for branch, branch_sha in project.branches.items():
            if branch_sha == sha:
                return branch
        for mr in project.merge_requests.values():
            if mr.sha == sha:
                return f"refs/merge-requests/{mr.iid}/head"
        return None

    def _list_statuses(self, request: _Request, params: dict[str, str]) -> Any:
        project = self._project(params["project"])
        sha = params["sha"]
        if not project.has_commit(sha):
            raise _not_found("Commit")
        statuses = [s for s in project.statuses if s.sha == sha]
        for key in ("ref", "name"):
            if key in request.query:
                statuses = [s for s in statuses if getattr(s, key) == request.query[key]]
        if request.query.get("all", "false") != "true":
            latest: dict[str, CommitStatus] = {}
            for status in statuses:
                latest[status.name] = status
            statuses = list(latest.values())
        return self._paginate(request, [self._status_json(s) for s in statuses])

    def _project_access(self, project: Project, user_id: int, inherited: bool) -> int | None:
        levels = [project.members[user_id]] if user_id in project.members else []
        if inherited and project.namespace is not None:
            levels += [
                g.members[user_id] for g in project.namespace.lineage() if user_id in g.members
            ]
        return max(levels) if levels else None

    def _group_access(self, group: Group, user_id: int, inherited: bool) -> int | None:
        groups = list(group.lineage()) if inherited else [group]
        levels = [g.members[user_id] for g in groups if user_id in g.members]
        return max(levels) if levels else None

    def _member(self, level: int | None, user_id: str) -> Any:
        if level is None:
            raise _not_found()
        return self._member_json(self._user_by_id(user_id), level)

    def _get_project_member(self, request: _Request, params: dict[str, str]) -> Any:
        project = self._project(params["project"])
        user = self._user_by_id(params["user_id"])
        return self._member(self._project_access(project, user.id, False), params["user_id"])

    def _get_project_member_all(self, request: _Request, params: dict[str, str]) -> Any:
        project = self._project(params["project"])
        user = self._user_by_id(params["user_id"])
        return self._member(self._project_access(project, user.id, True), params["user_id"])

    def _get_group(self, request: _Request, params: dict[str, str]) -> Any:
        group = self._group(params["group"])
        return {
            "id": group.id,
            "name": group.name,
            "path": group.name,
            "full_path": group.full_path,
            "parent_id": group.parent.id if group.parent else None,
            "web_url": f"{self._web_base()}/groups/{group.full_path}",
        }

    def _get_group_member(self, request: _Request, params: dict[str, str]) -> Any:
        group = self._group(params["group"])
        user = self._user_by_id(params["user_id"])
        return self._member(self._group_access(group, user.id, False), params["user_id"])

    def _get_group_member_all(self, request: _Request, params: dict[str, str]) -> Any:
        group = self._group(params["group"])
        user = self._user_by_id(params["user_id"])
        return self._member(self._group_access(group, user.id, True), params["user_id"])


def _route(method: str, pattern: str, action: Callable[..., Any]) -> _Route:
    return method, tuple(pattern.split("/")), action


_MR = "projects/:project/merge_requests/:iid"
_ROUTES: list[_Route] = [
    _route("GET", "user", GitLabEmulator._get_current_user),
    _route("GET", "users", GitLabEmulator._list_users),
    _route("GET", "users/:user_id", GitLabEmulator._get_user),
    _route("GET", "projects/:project", GitLabEmulator._get_project),
    _route("GET", "projects/:project/repository/branches/:branch", GitLabEmulator._get_branch),
    _route("GET", "projects/:project/merge_requests", GitLabEmulator._list_mrs),
    _route("POST", "projects/:project/merge_requests", GitLabEmulator._create_mr),
    _route("GET", _MR, GitLabEmulator._get_mr),
    _route("GET", f"{_MR}/approvals", GitLabEmulator._get_mr_approvals),
    _route("GET", f"{_MR}/changes", GitLabEmulator._get_mr_changes),
    _route("GET", f"{_MR}/diffs", GitLabEmulator._list_mr_diffs),
    _route("GET", f"{_MR}/notes", GitLabEmulator._list_notes),
    _route("POST", f"{_MR}/notes", GitLabEmulator._create_note),
    _route("GET", f"{_MR}/notes/:note_id", GitLabEmulator._get_note),
    _route("PUT", f"{_MR}/notes/:note_id", GitLabEmulator._update_note),
    _route("GET", f"{_MR}/notes/:note_id/award_emoji", GitLabEmulator._list_awards),
    _route("POST", f"{_MR}/notes/:note_id/award_emoji", GitLabEmulator._create_award),
    _route("POST", "projects/:project/statuses/:sha", GitLabEmulator._create_status),
    _route(
        "GET", "projects/:project/repository/commits/:sha/statuses", GitLabEmulator._list_statuses
    ),
    _route(
        "GET",
        "projects/:project/repository/commits/:sha/comments",
        GitLabEmulator._list_commit_comments,
    ),
    _route(
        "POST",
        "projects/:project/repository/commits/:sha/comments",
        GitLabEmulator._create_commit_comment,
    ),
    _route("GET", "projects/:project/members/:user_id", GitLabEmulator._get_project_member),
    _route("GET", "projects/:project/members/all/:user_id", GitLabEmulator._get_project_member_all),
    _route("GET", "groups/:group", GitLabEmulator._get_group),
    _route("GET", "groups/:group/members/:user_id", GitLabEmulator._get_group_member),
    _route("GET", "groups/:group/members/all/:user_id", GitLabEmulator._get_group_member_all),
]


@contextmanager
def running(**options: Any) -> Iterator[GitLabEmulator]:
    """``with running(token=...) as gitlab:`` — a started emulator, stopped afterwards."""
    emulator = GitLabEmulator(**options)
    with emulator:
        yield emulator

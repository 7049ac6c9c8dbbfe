"""The one interface both forge backends implement.

Everything above ``bot.forge`` talks to a ``Forge`` and the values below; only
the backends know whether they speak to GitHub or GitLab. Business logic (the
sticky comment, status wording, authorization decisions) lives above this line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

StatusState = Literal["pending", "success", "failure", "error"]


class Permission(IntEnum):
    """A user's access to a repository, on one scale for both forges.

    GitHub: none/read/triage/write/maintain/admin.
    GitLab: Guest → NONE, Reporter → READ, Developer → WRITE, Maintainer → MAINTAIN,
    Owner → ADMIN.
    """

    NONE = 0
    READ = 10
    TRIAGE = 20
    WRITE = 30
    MAINTAIN = 40
    ADMIN = 50

    @classmethod
    def parse(cls, value: str) -> Permission:
        aliases = {
            "reporter": cls.READ,
            "developer": cls.WRITE,
            "maintainer": cls.MAINTAIN,
            "owner": cls.ADMIN,
            "guest": cls.NONE,
            "pull": cls.READ,
            "push": cls.WRITE,
        }
        key = value.strip().lower()
        if key in aliases:
            return aliases[key]
        try:
            return cls[key.upper()]
        except KeyError:
            raise ValueError(f"unknown permission level {value!r}") from None


class ForgeError(RuntimeError):
    """A forge API call failed for good (after retries). Never carries a token."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False):
        super().__init__(message)
        self.status = status
        self.transient = transient


@dataclass(frozen=True)
class RepoRef:
    forge: Literal["github", "gitlab"]
    full_name: str  # "owner/name" on GitHub, "group/sub/project" on GitLab
    clone_url: str
    project_id: int | None = None  # GitLab's numeric id, when known


@dataclass(frozen=True)
class PullRequest:
    repo: RepoRef
    number: int  # GitHub PR number / GitLab MR iid
    title: str
    author: str
    base_ref: str
    base_sha: str
    head_ref: str
    head_sha: str
    is_fork: bool
    draft: bool
    state: Literal["open", "closed", "merged"]
    url: str
    merge_sha: str | None = None
    head_clone_url: str | None = None  # where the head commits live (differs for forks)


@dataclass(frozen=True)
class Approval:
    """A reviewer's approval and the head SHA it was given for.

    GitHub binds each review to a commit; GitLab binds approvals to the merge
    request, so its backend reports the MR's current head.
    """

    user: str
    sha: str


@dataclass(frozen=True)
class Comment:
    id: int
    author: str
    body: str
    url: str = ""


class Forge(ABC):
    """API calls one forge offers Sluice. Implementations retry transient failures."""

    name: Literal["github", "gitlab"]

    @abstractmethod
    def bot_login(self) -> str:
        """The login the bot itself posts as (its own comments are never commands)."""

    @abstractmethod
    def get_pull_request(self, repo: RepoRef, number: int) -> PullRequest: ...

    @abstractmethod
    def changed_files(self, pr: PullRequest) -> list[str]: ...

    @abstractmethod
    def list_comments(self, pr: PullRequest) -> list[Comment]:
        """All comments on the PR, oldest first (across every page)."""

    @abstractmethod
    def create_comment(self, pr: PullRequest, body: str) -> Comment: ...

    @abstractmethod
    def edit_comment(self, pr: PullRequest, comment_id: int, body: str) -> Comment: ...

    @abstractmethod
    def list_commit_comments(self, repo: RepoRef, sha: str) -> list[Comment]:
        """All comments on commit ``sha``, oldest first (across every page)."""

    @abstractmethod
    def create_commit_comment(self, repo: RepoRef, sha: str, body: str) -> Comment:
        """Comment on commit ``sha`` as a whole (not on a line)."""

    @abstractmethod
    def edit_commit_comment(
        self, repo: RepoRef, sha: str, comment_id: int, body: str
    ) -> Comment | None:
        """Replace a commit comment's body; None when the forge cannot edit commit
        comments (GitLab), in which case the existing comment stands as it is."""

    @abstractmethod
    def set_status(
        self,
        repo: RepoRef,
        sha: str,
        context: str,
        state: StatusState,
        description: str,
        target_url: str | None = None,
    ) -> None:
        """Set a commit status; idempotent for the same (sha, context, state)."""

    @abstractmethod
    def add_reaction(self, pr: PullRequest, comment_id: int, reaction: str) -> None:
        """React to a comment ("eyes", "+1", "-1", "confused"); idempotent."""

    @abstractmethod
    def permission(self, repo: RepoRef, user: str) -> Permission: ...

    @abstractmethod
    def is_member(self, repo: RepoRef, team: str, user: str) -> bool:
        """Whether ``user`` is in ``team`` (GitHub "org/team-slug", GitLab group path)."""

    @abstractmethod
    def clone_auth(self, repo: RepoRef) -> tuple[str, str]:
        """(username, password) for HTTPS git fetches of ``repo``; never logged."""

    @abstractmethod
    def approvals(self, pr: PullRequest) -> list[Approval]:
        """The approvals standing now (withdrawn or dismissed ones are not listed)."""

    @abstractmethod
    def create_pull_request(
        self, repo: RepoRef, head_branch: str, base_branch: str, title: str, body: str
    ) -> PullRequest:
        """Open a pull request from ``head_branch`` (in ``repo``) into ``base_branch``."""

    @abstractmethod
    def open_pull_requests(self, repo: RepoRef, base_branch: str) -> list[PullRequest]:
        """Every open pull request into ``base_branch`` (across every page)."""

"""Typed webhook events (what every part after intake sees), their keys and queue form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bot.forge.base import RepoRef

ForgeName = Literal["github", "gitlab"]
PullRequestAction = Literal[
    "opened",
    "synchronize",
    "reopened",
    "ready_for_review",
    "converted_to_draft",
    "edited",
    "closed",
    "merged",
]
CommentAction = Literal["created", "edited", "deleted"]


class WebhookError(ValueError):
    """A delivery was rejected; ``status`` is the HTTP answer. Never quotes the body."""

    status = 400


class SignatureError(WebhookError):
    status = 401


class PayloadError(WebhookError):
    status = 400


@dataclass(frozen=True)
class PullRequestEvent:
    forge: ForgeName
    repo: RepoRef
    number: int
    action: PullRequestAction
    head_sha: str
    base_sha: str | None  # GitLab's merge request hook does not carry it
    base_ref: str
    head_ref: str
    draft: bool
    is_fork: bool
    author: str | None  # the PR author, when the payload names it
    base_changed: bool = False
    sender: str = ""  # who caused the event
    title: str = ""
    merge_sha: str | None = None
    head_clone_url: str | None = None

    @property
    def pr_key(self) -> str:
        return pr_key(self.forge, self.repo.full_name, self.number)


@dataclass(frozen=True)
class CommentEvent:
    forge: ForgeName
    repo: RepoRef
    number: int
    comment_id: int
    body: str
    author: str
    action: CommentAction
    is_pull_request: bool = True
    author_is_bot: bool = False

    @property
    def pr_key(self) -> str:
        return pr_key(self.forge, self.repo.full_name, self.number)


@dataclass(frozen=True)
class PushEvent:
    """New commits on a branch (not a tag; never a deletion)."""

    forge: ForgeName
    repo: RepoRef
    branch: str
    before: str  # all zeros when the push created the branch
    after: str
    pusher: str
    forced: bool = False  # GitHub says so; GitLab's push hook does not tell

    @property
    def created(self) -> bool:
        return is_zero_sha(self.before)

    @property
    def pr_key(self) -> str:
        """Serializes work on one branch, like ``pr_key`` does for a PR."""
        return push_key(self.forge, self.repo.full_name, self.branch)


@dataclass(frozen=True)
class Unsupported:
    reason: str


Event = PullRequestEvent | CommentEvent | PushEvent


@dataclass(frozen=True)
class Delivery:
    forge: ForgeName
    delivery_id: str
    event_name: str  # the forge's event header, e.g. "pull_request", "Note Hook"
    event: Event | Unsupported


def pr_key(forge: str, full_name: str, number: int) -> str:
    """The key that serializes work on one PR: ``github:org/repo#12``."""
    return f"{forge}:{full_name}#{number}"


def push_key(forge: str, full_name: str, branch: str) -> str:
    """The key that serializes work on one branch: ``github:org/repo@main``."""
    return f"{forge}:{full_name}@{branch}"


def is_zero_sha(sha: str) -> bool:
    """The forges' "no commit" SHA (a created branch's before, a deleted one's after)."""
    return bool(sha) and set(sha) == {"0"}


def event_to_dict(event: Event) -> dict[str, Any]:
    return {"type": type(event).__name__, **asdict(event)}


def event_from_dict(data: Mapping[str, Any]) -> Event:
    fields = dict(data)
    kind = fields.pop("type", None)
    fields["repo"] = RepoRef(**fields["repo"])
    if kind == "PullRequestEvent":
        return PullRequestEvent(**fields)
    if kind == "CommentEvent":
        return CommentEvent(**fields)
    if kind == "PushEvent":
        return PushEvent(**fields)
    raise ValueError(f"unknown event type {kind!r}")

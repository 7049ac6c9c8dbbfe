"""Webhook deliveries from GitHub and GitLab: authentication and typed events.

This module and the two backends are the only places that know forge payload
shapes. Everything downstream sees ``PullRequestEvent`` / ``CommentEvent`` /
``PushEvent``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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


# -- authentication --------------------------------------------------------------------


def verify_github_signature(secret: str, body: bytes, signature: str | None) -> None:
    """Check ``X-Hub-Signature-256`` (``sha256=<hex HMAC of the raw body>``)."""
    if not signature:
        raise SignatureError("missing X-Hub-Signature-256 header")
    scheme, _, received = signature.partition("=")
    if scheme != "sha256" or not received:
        raise SignatureError("X-Hub-Signature-256 is not of the form sha256=<hex>")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), received.strip().lower().encode()):
        raise SignatureError("X-Hub-Signature-256 does not match the body")


def verify_gitlab_token(secret: str, token: str | None) -> None:
    """Check ``X-Gitlab-Token`` against the configured secret (constant time)."""
    if not token:
        raise SignatureError("missing X-Gitlab-Token header")
    if not hmac.compare_digest(secret.encode(), token.encode()):
        raise SignatureError("X-Gitlab-Token does not match")


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub would send for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- parsing ---------------------------------------------------------------------------


def parse_github(headers: Mapping[str, str], body: bytes) -> Delivery:
    """Turn an authenticated GitHub delivery into a ``Delivery``."""
    event_name = _header(headers, "X-GitHub-Event")
    delivery_id = _header(headers, "X-GitHub-Delivery")
    payload = _json_object(body)
    if event_name == "pull_request":
        event: Event | Unsupported = _github_pull_request(payload)
    elif event_name == "issue_comment":
        event = _github_issue_comment(payload)
    elif event_name == "push":
        event = _github_push(payload)
    elif event_name == "ping":
        event = Unsupported("ping: the webhook is set up")
    else:
        event = Unsupported(f"event {event_name!r} is not handled")
    return Delivery("github", delivery_id, event_name, event)


def parse_gitlab(headers: Mapping[str, str], body: bytes) -> Delivery:
    """Turn an authenticated GitLab delivery into a ``Delivery``."""
    event_name = _header(headers, "X-Gitlab-Event")
    delivery_id = _header(headers, "X-Gitlab-Event-UUID")
    payload = _json_object(body)
    if event_name == "Merge Request Hook":
        event: Event | Unsupported = _gitlab_merge_request(payload)
    elif event_name == "Note Hook":
        event = _gitlab_note(payload)
    elif event_name == "Push Hook":
        event = _gitlab_push(payload)
    else:
        event = Unsupported(f"event {event_name!r} is not handled")
    return Delivery("gitlab", delivery_id, event_name, event)


_GITHUB_PR_ACTIONS = {
    "opened",
    "synchronize",
    "reopened",
    "ready_for_review",
    "converted_to_draft",
    "edited",
    "closed",
}


def _github_pull_request(payload: dict[str, Any]) -> PullRequestEvent | Unsupported:
    action = _str(payload, "action")
    if action not in _GITHUB_PR_ACTIONS:
        return Unsupported(f"pull_request action {action!r} is not handled")
    pr = _dict(payload, "pull_request")
    base = _dict(pr, "base")
    head = _dict(pr, "head")
    base_changed = action == "edited" and "base" in (payload.get("changes") or {})
    if action == "edited" and not base_changed:
        return Unsupported("pull_request edited without a base branch change")
    if action == "closed" and pr.get("merged") is True:
        action = "merged"
    repo = _github_repo(_dict(payload, "repository"))
    head_repo = head.get("repo")  # null when the fork was deleted
    head_name = head_repo.get("full_name") if isinstance(head_repo, dict) else None
    return PullRequestEvent(
        forge="github",
        repo=repo,
        number=_int(pr, "number"),
        action=action,  # type: ignore[arg-type]
        head_sha=_str(head, "sha"),
        base_sha=_str(base, "sha"),
        base_ref=_str(base, "ref"),
        head_ref=_str(head, "ref"),
        draft=bool(pr.get("draft", False)),
        is_fork=head_name != repo.full_name,
        author=_login(pr.get("user")),
        base_changed=base_changed,
        sender=_login(payload.get("sender")) or "",
        title=str(pr.get("title") or ""),
        merge_sha=pr.get("merge_commit_sha") if action == "merged" else None,
        head_clone_url=head_repo.get("clone_url") if isinstance(head_repo, dict) else None,
    )


def _github_issue_comment(payload: dict[str, Any]) -> CommentEvent | Unsupported:
    issue = _dict(payload, "issue")
    if not issue.get("pull_request"):
        return Unsupported("issue_comment on an issue, not a pull request")
    action = _str(payload, "action")
    if action not in ("created", "edited", "deleted"):
        return Unsupported(f"issue_comment action {action!r} is not handled")
    comment = _dict(payload, "comment")
    user = comment.get("user") or {}
    return CommentEvent(
        forge="github",
        repo=_github_repo(_dict(payload, "repository")),
        number=_int(issue, "number"),
        comment_id=_int(comment, "id"),
        body=str(comment.get("body") or ""),
        author=_login(user) or "",
        action=action,  # type: ignore[arg-type]
        is_pull_request=True,
        author_is_bot=isinstance(user, dict) and user.get("type") == "Bot",
    )


def _github_push(payload: dict[str, Any]) -> PushEvent | Unsupported:
    branch = _pushed_branch(_str(payload, "ref"))
    if isinstance(branch, Unsupported):
        return branch
    after = _str(payload, "after")
    if payload.get("deleted") is True or is_zero_sha(after):
        return Unsupported(f"push deleted branch {branch!r}")
    pusher = payload.get("pusher") if isinstance(payload.get("pusher"), dict) else {}
    return PushEvent(
        forge="github",
        repo=_github_repo(_dict(payload, "repository")),
        branch=branch,
        before=_str(payload, "before"),
        after=after,
        pusher=_login(payload.get("sender")) or str(pusher.get("name") or ""),
        forced=payload.get("forced") is True,
    )


def _pushed_branch(ref: str) -> str | Unsupported:
    """The branch name of ``refs/heads/<branch>``; tags and other refs are not handled."""
    if ref.startswith("refs/tags/"):
        return Unsupported(f"push of tag {ref.removeprefix('refs/tags/')!r}")
    if not ref.startswith("refs/heads/") or ref == "refs/heads/":
        return Unsupported(f"push to {ref!r}, not a branch")
    return ref.removeprefix("refs/heads/")


def _github_repo(repo: dict[str, Any]) -> RepoRef:
    return RepoRef(
        forge="github", full_name=_str(repo, "full_name"), clone_url=_str(repo, "clone_url")
    )


def _gitlab_merge_request(payload: dict[str, Any]) -> PullRequestEvent | Unsupported:
    attrs = _dict(payload, "object_attributes")
    gitlab_action = attrs.get("action")
    changes = payload.get("changes") or {}
    draft = bool(attrs.get("draft", attrs.get("work_in_progress", False)))
    base_changed = "target_branch" in changes
    action: str
    if gitlab_action == "open":
        action = "opened"
    elif gitlab_action == "reopen":
        action = "reopened"
    elif gitlab_action == "close":
        action = "closed"
    elif gitlab_action == "merge":
        action = "merged"
    elif gitlab_action == "update":
        if attrs.get("oldrev"):
            action = "synchronize"
        elif base_changed:
            action = "edited"
        elif _draft_flip(changes) is not None:
            action = "converted_to_draft" if _draft_flip(changes) else "ready_for_review"
        else:
            return Unsupported("merge request update without new commits or a target change")
    else:
        return Unsupported(f"merge request action {gitlab_action!r} is not handled")
    project = _dict(payload, "project")
    repo = _gitlab_repo(project)
    source = attrs.get("source") if isinstance(attrs.get("source"), dict) else {}
    last_commit = _dict(attrs, "last_commit")
    source_project = attrs.get("source_project_id")
    target_project = attrs.get("target_project_id", repo.project_id)
    sender = _login(payload.get("user")) or ""
    return PullRequestEvent(
        forge="gitlab",
        repo=repo,
        number=_int(attrs, "iid"),
        action=action,  # type: ignore[arg-type]
        head_sha=_str(last_commit, "id"),
        base_sha=None,
        base_ref=_str(attrs, "target_branch"),
        head_ref=_str(attrs, "source_branch"),
        draft=draft,
        is_fork=source_project is not None and source_project != target_project,
        author=sender if action == "opened" else None,
        base_changed=base_changed,
        sender=sender,
        title=str(attrs.get("title") or ""),
        merge_sha=attrs.get("merge_commit_sha") if action == "merged" else None,
        head_clone_url=source.get("git_http_url") if source else None,
    )


def _draft_flip(changes: dict[str, Any]) -> bool | None:
    """The new draft state if this update toggled it, else None."""
    for key in ("draft", "work_in_progress"):
        change = changes.get(key)
        if isinstance(change, dict) and change.get("previous") != change.get("current"):
            return bool(change.get("current"))
    return None


_GITLAB_NOTE_ACTIONS = {"create": "created", "update": "edited"}


def _gitlab_note(payload: dict[str, Any]) -> CommentEvent | Unsupported:
    attrs = _dict(payload, "object_attributes")
    if attrs.get("noteable_type") != "MergeRequest":
        return Unsupported(f"note on {attrs.get('noteable_type')!r}, not a merge request")
    action = _GITLAB_NOTE_ACTIONS.get(attrs.get("action") or "create")
    if action is None:
        return Unsupported(f"note action {attrs.get('action')!r} is not handled")
    merge_request = _dict(payload, "merge_request")
    user = payload.get("user") or {}
    return CommentEvent(
        forge="gitlab",
        repo=_gitlab_repo(_dict(payload, "project")),
        number=_int(merge_request, "iid"),
        comment_id=_int(attrs, "id"),
        body=str(attrs.get("note") or ""),
        author=_login(user) or "",
        action=action,  # type: ignore[arg-type]
        is_pull_request=True,
        author_is_bot=isinstance(user, dict) and bool(user.get("bot", False)),
    )


def _gitlab_push(payload: dict[str, Any]) -> PushEvent | Unsupported:
    branch = _pushed_branch(_str(payload, "ref"))
    if isinstance(branch, Unsupported):
        return branch
    after = _str(payload, "after")
    if is_zero_sha(after):
        return Unsupported(f"push deleted branch {branch!r}")
    return PushEvent(
        forge="gitlab",
        repo=_gitlab_repo(_dict(payload, "project")),
        branch=branch,
        before=_str(payload, "before"),
        after=after,
        pusher=str(payload.get("user_username") or ""),
    )


def _gitlab_repo(project: dict[str, Any]) -> RepoRef:
    return RepoRef(
        forge="gitlab",
        full_name=_str(project, "path_with_namespace"),
        clone_url=_str(project, "git_http_url"),
        project_id=_int(project, "id"),
    )


# -- (de)serialization for the job queue -------------------------------------------------


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


# -- payload helpers: every missing or mistyped field is a PayloadError --------------------


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value or not value.strip():
        raise PayloadError(f"missing {name} header")
    if len(value) > 200:
        raise PayloadError(f"{name} header is too long")
    return value.strip()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PayloadError("body is not valid JSON") from None
    except RecursionError:
        raise PayloadError("body JSON is nested too deeply") from None
    except ValueError:  # Python's limit on integer digits (sys.get_int_max_str_digits)
        raise PayloadError("body JSON has a number with too many digits") from None
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object")
    return payload


def _dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise PayloadError(f"payload field {key!r} is missing or not an object")
    return value


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"payload field {key!r} is missing or not a string")
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"payload field {key!r} is missing or not an integer")
    return value


def _login(user: Any) -> str | None:
    if isinstance(user, dict):
        name = user.get("login") or user.get("username")
        return name if isinstance(name, str) else None
    return None

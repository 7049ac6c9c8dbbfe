"""Webhook deliveries from GitHub and GitLab: authentication and parsing into typed events.

This module and the two backends are the only places that know forge payload
shapes. Everything downstream sees ``PullRequestEvent`` / ``CommentEvent`` /
``PushEvent``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from bot.forge.base import RepoRef
from bot.forge.events import (
    CommentAction,
    CommentEvent,
    Delivery,
    Event,
    ForgeName,
    PayloadError,
    PullRequestAction,
    PullRequestEvent,
    PushEvent,
    SignatureError,
    Unsupported,
    WebhookError,
    event_from_dict,
    event_to_dict,
    is_zero_sha,
    pr_key,
    push_key,
)
from bot.forge.payload import field_dict, field_int, field_str, header, json_object, login_of

__all__ = [
    "CommentAction",
    "CommentEvent",
    "Delivery",
    "Event",
    "ForgeName",
    "PayloadError",
    "PullRequestAction",
    "PullRequestEvent",
    "PushEvent",
    "SignatureError",
    "Unsupported",
    "WebhookError",
    "event_from_dict",
    "event_to_dict",
    "github_signature",
    "is_zero_sha",
    "parse_github",
    "parse_gitlab",
    "pr_key",
    "push_key",
    "verify_github_signature",
    "verify_gitlab_token",
]


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
    event_name = header(headers, "X-GitHub-Event")
    delivery_id = header(headers, "X-GitHub-Delivery")
    payload = json_object(body)
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
    event_name = header(headers, "X-Gitlab-Event")
    delivery_id = header(headers, "X-Gitlab-Event-UUID")
    payload = json_object(body)
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
    action = field_str(payload, "action")
    if action not in _GITHUB_PR_ACTIONS:
        return Unsupported(f"pull_request action {action!r} is not handled")
    pr = field_dict(payload, "pull_request")
    base = field_dict(pr, "base")
    head = field_dict(pr, "head")
    base_changed = action == "edited" and "base" in (payload.get("changes") or {})
    if action == "edited" and not base_changed:
        return Unsupported("pull_request edited without a base branch change")
    if action == "closed" and pr.get("merged") is True:
        action = "merged"
    repo = _github_repo(field_dict(payload, "repository"))
    head_repo = head.get("repo")  # null when the fork was deleted
    head_name = head_repo.get("full_name") if isinstance(head_repo, dict) else None
    return PullRequestEvent(
        forge="github",
        repo=repo,
        number=field_int(pr, "number"),
        action=action,  # type: ignore[arg-type]
        head_sha=field_str(head, "sha"),
        base_sha=field_str(base, "sha"),
        base_ref=field_str(base, "ref"),
        head_ref=field_str(head, "ref"),
        draft=bool(pr.get("draft", False)),
        is_fork=head_name != repo.full_name,
        author=login_of(pr.get("user")),
        base_changed=base_changed,
        sender=login_of(payload.get("sender")) or "",
        title=str(pr.get("title") or ""),
        merge_sha=pr.get("merge_commit_sha") if action == "merged" else None,
        head_clone_url=head_repo.get("clone_url") if isinstance(head_repo, dict) else None,
    )


def _github_issue_comment(payload: dict[str, Any]) -> CommentEvent | Unsupported:
    issue = field_dict(payload, "issue")
    if not issue.get("pull_request"):
        return Unsupported("issue_comment on an issue, not a pull request")
    action = field_str(payload, "action")
    if action not in ("created", "edited", "deleted"):
        return Unsupported(f"issue_comment action {action!r} is not handled")
    comment = field_dict(payload, "comment")
    user = comment.get("user") or {}
    return CommentEvent(
        forge="github",
        repo=_github_repo(field_dict(payload, "repository")),
        number=field_int(issue, "number"),
        comment_id=field_int(comment, "id"),
        body=str(comment.get("body") or ""),
        author=login_of(user) or "",
        action=action,  # type: ignore[arg-type]
        is_pull_request=True,
        author_is_bot=isinstance(user, dict) and user.get("type") == "Bot",
    )


def _github_push(payload: dict[str, Any]) -> PushEvent | Unsupported:
    branch = _pushed_branch(field_str(payload, "ref"))
    if isinstance(branch, Unsupported):
        return branch
    after = field_str(payload, "after")
    if payload.get("deleted") is True or is_zero_sha(after):
        return Unsupported(f"push deleted branch {branch!r}")
    pusher = payload.get("pusher") if isinstance(payload.get("pusher"), dict) else {}
    return PushEvent(
        forge="github",
        repo=_github_repo(field_dict(payload, "repository")),
        branch=branch,
        before=field_str(payload, "before"),
        after=after,
        pusher=login_of(payload.get("sender")) or str(pusher.get("name") or ""),
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
        forge="github",
        full_name=field_str(repo, "full_name"),
        clone_url=field_str(repo, "clone_url"),
    )


def _gitlab_merge_request(payload: dict[str, Any]) -> PullRequestEvent | Unsupported:
    attrs = field_dict(payload, "object_attributes")
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
    project = field_dict(payload, "project")
    repo = _gitlab_repo(project)
    source = attrs.get("source") if isinstance(attrs.get("source"), dict) else {}
    last_commit = field_dict(attrs, "last_commit")
    source_project = attrs.get("source_project_id")
    target_project = attrs.get("target_project_id", repo.project_id)
    sender = login_of(payload.get("user")) or ""
    return PullRequestEvent(
        forge="gitlab",
        repo=repo,
        number=field_int(attrs, "iid"),
        action=action,  # type: ignore[arg-type]
        head_sha=field_str(last_commit, "id"),
        base_sha=None,
        base_ref=field_str(attrs, "target_branch"),
        head_ref=field_str(attrs, "source_branch"),
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
    attrs = field_dict(payload, "object_attributes")
    if attrs.get("noteable_type") != "MergeRequest":
        return Unsupported(f"note on {attrs.get('noteable_type')!r}, not a merge request")
    action = _GITLAB_NOTE_ACTIONS.get(attrs.get("action") or "create")
    if action is None:
        return Unsupported(f"note action {attrs.get('action')!r} is not handled")
    merge_request = field_dict(payload, "merge_request")
    user = payload.get("user") or {}
    return CommentEvent(
        forge="gitlab",
        repo=_gitlab_repo(field_dict(payload, "project")),
        number=field_int(merge_request, "iid"),
        comment_id=field_int(attrs, "id"),
        body=str(attrs.get("note") or ""),
        author=login_of(user) or "",
        action=action,  # type: ignore[arg-type]
        is_pull_request=True,
        author_is_bot=isinstance(user, dict) and bool(user.get("bot", False)),
    )


def _gitlab_push(payload: dict[str, Any]) -> PushEvent | Unsupported:
    branch = _pushed_branch(field_str(payload, "ref"))
    if isinstance(branch, Unsupported):
        return branch
    after = field_str(payload, "after")
    if is_zero_sha(after):
        return Unsupported(f"push deleted branch {branch!r}")
    return PushEvent(
        forge="gitlab",
        repo=_gitlab_repo(field_dict(payload, "project")),
        branch=branch,
        before=field_str(payload, "before"),
        after=after,
        pusher=str(payload.get("user_username") or ""),
    )


def _gitlab_repo(project: dict[str, Any]) -> RepoRef:
    return RepoRef(
        forge="gitlab",
        full_name=field_str(project, "path_with_namespace"),
        clone_url=field_str(project, "git_http_url"),
        project_id=field_int(project, "id"),
    )

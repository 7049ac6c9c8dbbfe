"""GitLab's answers as Forge values: merge requests, notes, access levels, error texts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from gitlab.exceptions import GitlabError

from bot.forge.base import Comment, ForgeError, Permission, PullRequest, RepoRef

_PR_STATES: dict[str, str] = {
    "opened": "open",
    "locked": "open",  # transient state while GitLab merges
    "closed": "closed",
    "merged": "merged",
}
_MAX_ERROR_CHARS = 300


def pull_request(
    repo: RepoRef,
    a: Mapping[str, Any],
    *,
    branch_sha: Callable[[str], str],
    head_clone_url: Callable[[RepoRef, Mapping[str, Any]], str],
) -> PullRequest:
    """A merge request's attributes as a ``PullRequest`` (the callables ask the API)."""
    if repo.project_id is None:
        repo = dataclasses.replace(repo, project_id=int(a["target_project_id"]))
    is_fork = a["source_project_id"] != a["target_project_id"]
    diff_refs = a.get("diff_refs") or {}
    base_sha = diff_refs.get("base_sha") or branch_sha(a["target_branch"])
    state = _PR_STATES.get(a["state"])
    if state is None:
        raise ForgeError(f"!{a['iid']} has unknown state {a['state']!r}")
    merge_sha = a.get("merge_commit_sha") or a.get("squash_commit_sha")
    if merge_sha is None and state == "merged":
        merge_sha = a["sha"]  # fast-forward merge: the head became the target tip
    return PullRequest(
        repo=repo,
        number=int(a["iid"]),
        title=a.get("title") or "",
        author=a["author"]["username"],
        base_ref=a["target_branch"],
        base_sha=base_sha,
        head_ref=a["source_branch"],
        head_sha=a["sha"],
        is_fork=is_fork,
        draft=bool(a.get("draft", a.get("work_in_progress", False))),
        state=state,  # type: ignore[arg-type]
        url=a["web_url"],
        merge_sha=merge_sha,
        head_clone_url=head_clone_url(repo, a) if is_fork else repo.clone_url,
    )


def note_comment(pr: PullRequest, note: Mapping[str, Any]) -> Comment:
    return Comment(
        id=int(note["id"]),
        author=note["author"]["username"],
        body=note["body"],
        url=f"{pr.url}#note_{note['id']}",
    )


def commit_comment(repo: RepoRef, sha: str, note: Mapping[str, Any]) -> Comment:
    """GitLab's commit comments carry no id (they cannot be addressed later): id 0."""
    web = repo.clone_url.removesuffix(".git") if repo.clone_url.startswith("http") else ""
    return Comment(
        id=0,
        author=(note.get("author") or {}).get("username", ""),
        body=note.get("note") or "",
        url=f"{web}/-/commit/{sha}" if web else "",
    )


def normalize_url(url: str) -> str:
    """The instance base URL: ``https://host[/relative_root]`` without ``/api/v4``."""
    stripped = url.strip().rstrip("/")
    if stripped.endswith("/api/v4"):
        stripped = stripped[: -len("/api/v4")]
    parts = urlsplit(stripped)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"GitLab URL must be http(s)://host[/path], got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("GitLab URL must not carry credentials, a query or a fragment")
    return stripped


def access_level_permission(access_level: int) -> Permission:
    """GitLab access level → Permission (Guest and Minimal access count as none)."""
    level = int(access_level)
    if level >= 50:
        return Permission.ADMIN
    if level >= 40:
        return Permission.MAINTAIN
    if level >= 30:
        return Permission.WRITE
    if level >= 20:
        return Permission.READ
    return Permission.NONE


def describe(exc: GitlabError) -> str:
    message = exc.error_message
    text = message if isinstance(message, str) else str(message)
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + "…"
    return f"GitLab answered {exc.response_code}: {text}"


def is_plain_not_found(exc: GitlabError) -> bool:
    """A 404 for the member itself, not for the project, group or user around it."""
    return not any(
        f"{what} Not Found" in str(exc.error_message) for what in ("Project", "Group", "User")
    )


def already_pending(exc: GitlabError, state: str) -> bool:
    """GitLab refuses a repeated ``pending`` for the same name and SHA with a 400."""
    return (
        exc.response_code == 400
        and state == "pending"
        and "Cannot transition status via :enqueue from :pending" in str(exc.error_message)
    )


def paths(diffs: list[dict[str, Any]]) -> list[str]:
    """Every path a change touches; a rename touches both its old and its new path."""
    seen: dict[str, None] = {}
    for diff in diffs:
        seen.setdefault(diff["old_path"], None)
        seen.setdefault(diff["new_path"], None)
    return list(seen)

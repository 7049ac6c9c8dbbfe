"""GitHub's JSON as Forge values: repository paths, pull requests, comments, permissions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import quote

from bot.forge.base import Comment, Permission, PullRequest, RepoRef

PER_PAGE = 100


def split_full_name(repo: RepoRef) -> tuple[str, str]:
    owner, slash, name = repo.full_name.partition("/")
    if not owner or not slash or not name or "/" in name:
        raise ValueError(f"GitHub repository must be 'owner/name', got {repo.full_name!r}")
    return owner, name


def repo_path(repo: RepoRef) -> str:
    owner, name = split_full_name(repo)
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


def pull_request(repo: RepoRef, data: dict[str, Any]) -> PullRequest:
    base, head = data["base"], data["head"]
    base_repo = base.get("repo") or {}
    head_repo = head.get("repo")  # None once a fork is deleted
    merged = bool(data.get("merged"))
    return PullRequest(
        repo=replace(repo, clone_url=repo.clone_url or base_repo.get("clone_url", "")),
        number=int(data["number"]),
        title=data.get("title") or "",
        author=(data.get("user") or {}).get("login", ""),
        base_ref=base["ref"],
        base_sha=base["sha"],
        head_ref=head["ref"],
        head_sha=head["sha"],
        is_fork=head_repo is None or head_repo.get("full_name") != base_repo.get("full_name"),
        draft=bool(data.get("draft")),
        state="merged" if merged else ("open" if data.get("state") == "open" else "closed"),
        url=data.get("html_url") or "",
        merge_sha=data.get("merge_commit_sha") if merged else None,
        head_clone_url=head_repo.get("clone_url") if head_repo else None,
    )


def comment(data: dict[str, Any]) -> Comment:
    return Comment(
        id=int(data["id"]),
        author=(data.get("user") or {}).get("login", ""),
        body=data.get("body") or "",
        url=data.get("html_url") or "",
    )


def permission(data: dict[str, Any]) -> Permission:
    # role_name carries maintain/triage and custom roles; the legacy "permission"
    # field folds those into write/read, which is the fallback for custom roles.
    for key in ("role_name", "permission"):
        value = data.get(key)
        if isinstance(value, str):
            try:
                return Permission.parse(value)
            except ValueError:
                continue
    return Permission.NONE

"""Forge backends (GitHub, GitLab) behind one interface."""

from bot.forge.base import Comment, Forge, ForgeError, Permission, PullRequest, RepoRef

__all__ = ["Comment", "Forge", "ForgeError", "Permission", "PullRequest", "RepoRef"]

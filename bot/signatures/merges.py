"""Unsigned merge commits that add nothing: what a forge's merge button makes.

GitLab (and GitHub without web-flow signing) records a merge with an unsigned
commit. Such a commit is safe to deploy when its tree is exactly the tree git's
own merge of its two parents produces: every line in it then comes from a parent,
and the parents' commits are verified on their own.
"""

from __future__ import annotations

from bot.gitops import Git


def merge_parents(git: Git, sha: str) -> list[str]:
    return git.run("rev-list", "--parents", "-n", "1", sha).decode().split()[1:]


def is_clean_merge(git: Git, sha: str) -> bool:
    """Whether ``sha`` has two parents and exactly the tree of their clean merge."""
    parents = merge_parents(git, sha)
    if len(parents) != 2:
        return False
    merged = git.run("merge-tree", "--write-tree", *parents, check=False).decode().split()
    tree = git.run("rev-parse", f"{sha}^{{tree}}").decode().strip()
    return bool(merged) and merged[0] == tree

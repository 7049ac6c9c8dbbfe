"""The forge methods promotion needs (approvals, opening and listing pull requests),
for both backends against their emulators over real HTTP; branches live in a real
bare git repository, as on a forge they live in what was pushed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.forge.base import Approval, ForgeError, RepoRef
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.forge.retry import Retrier
from tests.emulators.github import GitHubEmulator
from tests.emulators.gitlab import GitLabEmulator
from tests.gpgkit import commit, git, init_repo

REPO = "acme/deploy"
OLD, HEAD = "1" * 40, "2" * 40


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("forge-approvals")
    work = init_repo(tmp / "work")
    shas = {"main": commit(work, "base", files={"a.yaml": "a: 1\n"})}
    git(work, "checkout", "-q", "-b", "feature")
    shas["feature"] = commit(work, "change", files={"apps/web/a.yaml": "a: 2\n"})
    path = tmp / "deploy.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(path)], check=True)
    return path, shas


def no_sleep(_seconds: float) -> None:
    return None


# -- GitHub ----------------------------------------------------------------------------------


@pytest.fixture
def gh(bare) -> Iterator[tuple[GitHubEmulator, GitHubForge, RepoRef]]:
    path, _ = bare
    with GitHubEmulator() as emulator:
        emulator.add_repo(REPO, clone_url=str(path))
        emulator.add_pull(REPO, number=1, author="alice", head_ref="old", head_sha=HEAD)
        forge = GitHubForge(base_url=emulator.base_url, token=emulator.bot_token,
                            retrier=Retrier(attempts=2, sleep=no_sleep))  # fmt: skip
        yield emulator, forge, RepoRef("github", REPO, str(path))


def test_github_approvals_are_each_reviewers_latest_standing_review(gh):
    emulator, forge, repo = gh
    emulator.add_review(REPO, 1, "bob")
    emulator.add_review(REPO, 1, "carol")
    emulator.add_review(REPO, 1, "carol", state="CHANGES_REQUESTED")
    emulator.add_review(REPO, 1, "dave", state="APPROVED")
    emulator.add_review(REPO, 1, "dave", state="COMMENTED")  # a comment keeps the approval
    emulator.add_review(REPO, 1, "erin", commit_id=OLD)
    emulator.add_review(REPO, 1, "frank")
    emulator.add_review(REPO, 1, "frank", state="DISMISSED")
    for n in range(120):  # more than one page of reviews
        emulator.add_review(REPO, 1, f"user{n}", state="COMMENTED")

    approvals = forge.approvals(forge.get_pull_request(repo, 1))

    assert sorted(approvals, key=lambda a: a.user) == [
        Approval("bob", HEAD), Approval("dave", HEAD), Approval("erin", OLD)
    ]  # fmt: skip


def test_github_create_pull_request_from_a_pushed_branch(gh, bare):
    emulator, forge, repo = gh
    _, shas = bare

    pr = forge.create_pull_request(repo, "feature", "main", "Revert #1", "because")

    assert (pr.head_ref, pr.head_sha, pr.base_ref, pr.base_sha) == (
        "feature", shas["feature"], "main", shas["main"]
    )  # fmt: skip
    assert pr.state == "open" and pr.author == "sluice-bot" and pr.number == 2
    assert forge.changed_files(pr) == ["apps/web/a.yaml"]
    with pytest.raises(ForgeError) as missing:
        forge.create_pull_request(repo, "no-such-branch", "main", "x", "")
    assert missing.value.status == 422
    with pytest.raises(ForgeError) as duplicate:
        forge.create_pull_request(repo, "feature", "main", "again", "")
    assert duplicate.value.status == 422


def test_github_open_pull_requests_into_a_branch_across_pages(gh):
    emulator, forge, repo = gh
    for number in range(2, 108):
        emulator.add_pull(REPO, number=number, base_ref="main" if number % 2 else "release")
    emulator.merge_pull(REPO, 3, "3" * 40)

    found = forge.open_pull_requests(repo, "main")

    numbers = sorted(pr.number for pr in found)
    assert numbers == [1] + [n for n in range(5, 108, 2)]
    assert all(pr.state == "open" and pr.base_ref == "main" for pr in found)


# -- GitLab -----------------------------------------------------------------------------------


@pytest.fixture
def gl(bare) -> Iterator[tuple[GitLabEmulator, GitLabForge, RepoRef]]:
    path, shas = bare
    with GitLabEmulator(token="glpat-approvals") as emulator:
        project = emulator.add_project("acme/deploy", http_url=str(path))
        emulator.add_branch(project, "main", shas["main"])
        alice = emulator.add_user("alice")
        emulator.add_merge_request(project, source_branch="old", target_branch="main", sha=HEAD,
                                   base_sha=shas["main"], author=alice)  # fmt: skip
        forge = GitLabForge(url=emulator.url, token="glpat-approvals",
                            retrier=Retrier(attempts=2, sleep=no_sleep))  # fmt: skip
        yield emulator, forge, RepoRef("gitlab", "acme/deploy", str(path))


def test_gitlab_approvals_are_bound_to_the_merge_requests_current_head(gl):
    emulator, forge, repo = gl
    project = next(iter(emulator._projects.values()))
    mr = project.merge_requests[1]
    pr = forge.get_pull_request(repo, 1)
    assert forge.approvals(pr) == []

    emulator.approve(mr, emulator.add_user("bob"))
    emulator.approve(mr, emulator.add_user("carol"))

    assert forge.approvals(pr) == [Approval("bob", HEAD), Approval("carol", HEAD)]


def test_gitlab_create_and_list_merge_requests(gl, bare):
    emulator, forge, repo = gl
    _, shas = bare

    pr = forge.create_pull_request(repo, "feature", "main", "Revert !1", "because")

    assert (pr.number, pr.head_sha, pr.base_ref, pr.state) == (2, shas["feature"], "main", "open")
    assert pr.author == "sluice-bot"
    assert sorted(p.number for p in forge.open_pull_requests(repo, "main")) == [1, 2]
    assert forge.open_pull_requests(repo, "release") == []
    with pytest.raises(ForgeError) as duplicate:
        forge.create_pull_request(repo, "feature", "main", "again", "")
    assert duplicate.value.status == 409

"""The bot end to end: the real ``sluice serve`` (gunicorn + job process) over real HTTP,
the emulated GitHub and GitLab, a real GitOps repo served from a bare git repository,
real gpg, real Rego. Each test drives it only with webhooks and reads the outcome
where a reviewer would: the PR comments and the commit statuses on the forge.
"""

from __future__ import annotations

import base64
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from bot.queue import JobQueue
from bot.report import MARKER
from tests.botkit import (
    GH_SECRET,
    GH_TOKEN,
    GL_SECRET,
    GL_TOKEN,
    SECRET_VALUE,
    SERVER_SECRETS,
    GitOpsRepo,
    SluiceServer,
    build_gitops_repo,
    github_delivery,
    server_env,
    wait_for,
)
from tests.emulators import github as ghemu
from tests.emulators import gitlab as glemu

pytestmark = pytest.mark.timeout(120)

BOT = "sluice-bot"
CONTEXTS = ("sluice/preview", "sluice/policy", "sluice/signatures")
#: Final (preview, policy, signatures) states per branch, as the content dictates.
EXPECTED = {
    "clean": ("success", "success", "success"),
    "clean2": ("success", "success", "success"),
    "deny": ("success", "failure", "success"),
    "deny2": ("success", "failure", "success"),
    "unsigned": ("success", "success", "failure"),
    "secret": ("success", "success", "success"),
}
GITLAB_STATES = {"success": "success", "failure": "failed", "error": "failed"}


# -- the stack: emulators + a real server ---------------------------------------------------


@dataclass
class Stack:
    repo: GitOpsRepo
    gh: ghemu.GitHubEmulator
    gl: glemu.GitLabEmulator
    server: SluiceServer
    data_dir: Path

    # -- GitHub

    def gh_pull(
        self, full_name: str, branch: str, *, number: int = 1, head_repo: str | None = None
    ) -> ghemu.Pull:
        if full_name not in self.gh._repos:
            self.gh.add_repo(full_name, clone_url=self.repo.clone_url)
        return self.gh.add_pull(
            full_name,
            number=number,
            base_sha=self.repo.sha["main"],
            head_ref=branch,
            head_sha=self.repo.sha[branch],
            head_repo=head_repo,
        )

    def gh_event(self, pull: ghemu.Pull, action: str = "opened", **kw) -> requests.Response:
        payload = self.gh.pull_request_event(pull.repo, pull.number, action=action)
        return self.server.github("pull_request", payload, **kw)

    def gh_push(self, pull: ghemu.Pull, branch: str) -> requests.Response:
        with self.gh._lock:
            pull.head_sha = self.repo.sha[branch]
            pull.head_ref = branch
        return self.gh_event(pull, "synchronize")

    def gh_say(self, pull: ghemu.Pull, body: str, author: str, action: str = "created") -> int:
        comment_id = self.gh.add_comment(pull.repo, pull.number, body, author=author)
        payload = self.gh.issue_comment_event(pull.repo, comment_id, action=action)
        response = self.server.github("issue_comment", payload)
        assert response.status_code == 202, response.text
        return comment_id

    def gh_bot_comments(self, pull: ghemu.Pull) -> list[ghemu.IssueComment]:
        return [c for c in self.gh.comments(pull.repo, pull.number) if c.author == BOT]

    def gh_reports(self, pull: ghemu.Pull) -> list[ghemu.IssueComment]:
        return [c for c in self.gh_bot_comments(pull) if MARKER in c.body]

    def gh_final(self, full_name: str, sha: str) -> dict[str, ghemu.Status]:
        latest: dict[str, ghemu.Status] = {}
        for status in self.gh.statuses(full_name, sha):
            latest[status.context] = status
        return latest

    def gh_wait(self, full_name: str, sha: str, timeout: float = 40) -> dict[str, ghemu.Status]:
        def settled() -> dict[str, ghemu.Status] | None:
            final = self.gh_final(full_name, sha)
            done = len(final) == 3 and all(s.state != "pending" for s in final.values())
            return final if done else None

        return wait_for(settled, timeout, f"final statuses on {full_name}@{sha[:7]}")

    def gh_reply(self, pull: ghemu.Pull, needle: str, timeout: float = 30) -> ghemu.IssueComment:
        def find() -> ghemu.IssueComment | None:
            return next((c for c in self.gh_bot_comments(pull) if needle in c.body), None)

        return wait_for(find, timeout, f"a bot reply containing {needle!r}")

    # -- GitLab

    def gl_mr(self, path: str, branch: str, *, iid: int = 1) -> glemu.MergeRequest:
        project = next(
            (p for p in self.gl._projects.values() if p.path_with_namespace == path), None
        )
        if project is None:
            project = self.gl.add_project(path, http_url=self.repo.clone_url)
            self.gl.add_branch(project, "main", self.repo.sha["main"])
        author = self.gl.add_user(f"dev{len(self.gl._users)}")
        self.gl.add_member(project, author, glemu.DEVELOPER)
        return self.gl.add_merge_request(
            project,
            iid=iid,
            source_branch=branch,
            target_branch="main",
            sha=self.repo.sha[branch],
            base_sha=self.repo.sha["main"],
            author=author,
        )

    def gl_event(self, mr: glemu.MergeRequest, action: str = "open", **kw) -> requests.Response:
        return self.server.gitlab("Merge Request Hook", self.gl.merge_request_hook(mr, **kw))

    def gl_push(self, mr: glemu.MergeRequest, branch: str) -> requests.Response:
        old = mr.sha
        with self.gl._lock:
            mr.sha = self.repo.sha[branch]
            mr.source_project.commits.add(mr.sha)
            mr.source_project.branches[mr.source_branch] = mr.sha
        return self.server.gitlab(
            "Merge Request Hook", self.gl.merge_request_hook(mr, action="update", oldrev=old)
        )

    def gl_reports(self, mr: glemu.MergeRequest) -> list[glemu.Note]:
        return [n for n in self.gl.notes(mr) if n.author.username == BOT and MARKER in n.body]

    def gl_wait(
        self, mr: glemu.MergeRequest, sha: str, timeout: float = 40
    ) -> dict[str, glemu.CommitStatus]:
        def settled() -> dict[str, glemu.CommitStatus] | None:
            final = self.gl.latest_statuses(mr.project, sha)
            done = len(final) == 3 and all(s.state != "pending" for s in final.values())
            return final if done else None

        return wait_for(settled, timeout, f"final GitLab statuses on {sha[:7]}")

    def jobs(self) -> JobQueue:
        return JobQueue(self.data_dir / "sluice.db")


@pytest.fixture(scope="module")
def gitops(tmp_path_factory: pytest.TempPathFactory) -> GitOpsRepo:
    return build_gitops_repo(tmp_path_factory.mktemp("gitops"))


@contextlib.contextmanager
def running_stack(workdir: Path, gitops: GitOpsRepo, config: dict | None = None) -> Iterator[Stack]:
    """Fresh emulators and ``sluice serve`` configured from the environment alone
    (plus ``--config`` when ``config`` is given)."""
    workdir.mkdir(parents=True, exist_ok=True)
    gh = ghemu.GitHubEmulator(bot_login=BOT, bot_token=GH_TOKEN).start()
    gl = glemu.GitLabEmulator(token=GL_TOKEN, bot_username=BOT).start()
    config_file = None
    if config is not None:
        config_file = workdir / "sluice-server.yaml"
        config_file.write_text(yaml.safe_dump(config))
    data_dir = workdir / "data"
    env = server_env(data_dir, github_url=gh.base_url, gitlab_url=gl.url, keys=gitops.keys)
    server = SluiceServer(env, workdir / "serve.log", config_file)
    try:
        server.start()
        yield Stack(gitops, gh, gl, server, data_dir)
    finally:
        server.stop()
        gh.stop()
        gl.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, gitops: GitOpsRepo) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("main-stack"), gitops) as running:
        yield running


def states(final: dict) -> tuple[str, ...]:
    return tuple(final[c].state for c in CONTEXTS)


def assert_pending_first(statuses: list) -> None:
    """Each gate went pending before it reached its final state."""
    for context in CONTEXTS:
        seen = [
            s.state for s in statuses if getattr(s, "context", getattr(s, "name", None)) == context
        ]
        assert seen and seen[0] == "pending", (context, seen)


# -- 1. the main flow ------------------------------------------------------------------------


def test_github_pr_gets_one_sticky_report_and_three_statuses_per_head(stack: Stack):
    repo, sha = "acme/main-flow", stack.repo.sha
    pull = stack.gh_pull(repo, "clean", number=1)
    response = stack.gh_event(pull)
    assert response.status_code == 202 and response.json()["status"] == "queued"

    final = stack.gh_wait(repo, sha["clean"])
    assert states(final) == EXPECTED["clean"]
    assert_pending_first(stack.gh.statuses(repo, sha["clean"]))
    (report,) = stack.gh_reports(pull)
    assert stack.gh_bot_comments(pull) == [report]
    assert f"`{sha['clean'][:7]}`" in report.body and "passed" in report.body
    assert "web" in report.body
    assert final["sluice/policy"].description == "no policy violations"
    assert final["sluice/preview"].target_url and final["sluice/preview"].target_url.endswith(
        str(report.id)
    )

    # A new push edits the same comment and sets statuses for the new head.
    assert stack.gh_push(pull, "clean2").status_code == 202
    final2 = stack.gh_wait(repo, sha["clean2"])
    assert states(final2) == EXPECTED["clean2"]
    assert_pending_first(stack.gh.statuses(repo, sha["clean2"]))
    wait_for(lambda: f"`{sha['clean2'][:7]}`" in stack.gh.comment(report.id).body, 10, "the edit")
    assert [c.id for c in stack.gh_bot_comments(pull)] == [report.id]
    assert stack.gh_final(repo, sha["clean"]) == final  # the old head keeps its verdict

    # A PR whose content breaks a policy gets a red policy status, and only that.
    denied = stack.gh_pull(repo, "deny", number=2)
    stack.gh_event(denied)
    final = stack.gh_wait(repo, sha["deny"])
    assert states(final) == EXPECTED["deny"]
    assert "1 deny violations" in final["sluice/policy"].description
    (report,) = stack.gh_reports(denied)
    assert "deny_latest_tag" in report.body


def test_gitlab_mr_gets_one_sticky_note_and_three_statuses_per_head(stack: Stack):
    sha = stack.repo.sha
    mr = stack.gl_mr("acme/platform/gitops", "clean")
    response = stack.gl_event(mr)
    assert response.status_code == 202 and response.json()["status"] == "queued"

    final = stack.gl_wait(mr, sha["clean"])
    assert {name: s.state for name, s in final.items()} == dict.fromkeys(CONTEXTS, "success")
    # Each gate was set twice: pending when the work started, then its verdict.
    assert stack.gl.request_count("POST", f"/statuses/{sha['clean']}") == 6
    (note,) = stack.gl_reports(mr)
    assert f"`{sha['clean'][:7]}`" in note.body

    assert stack.gl_push(mr, "unsigned").status_code == 202
    final = stack.gl_wait(mr, sha["unsigned"])
    expected = dict(zip(CONTEXTS, EXPECTED["unsigned"], strict=True))
    assert {n: s.state for n, s in final.items()} == {
        n: GITLAB_STATES[state] for n, state in expected.items()
    }
    assert "unsigned" in final["sluice/signatures"].description
    wait_for(lambda: f"`{sha['unsigned'][:7]}`" in stack.gl_reports(mr)[0].body, 10, "the edit")
    assert [n.id for n in stack.gl_reports(mr)] == [note.id]
    assert [n for n in stack.gl.notes(mr) if n.author.username == BOT] == stack.gl_reports(mr)

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

from bot.report import MARKER
from bot.server.storage.queue import JobQueue
from tests.botkit import (
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


@pytest.fixture(scope="module")
def commands_stack(tmp_path_factory: pytest.TempPathFactory, gitops: GitOpsRepo) -> Iterator[Stack]:
    """A second env-only server: GitHub allows a bot about 80 content writes a minute,
    and the product keeps to that, so chat-ops tests get their own installation."""
    with running_stack(tmp_path_factory.mktemp("commands-stack"), gitops) as running:
        yield running


def assert_log_holds_no_credentials(server: SluiceServer) -> None:
    log = server.log()
    assert "queued job" in log  # it is the server's log, and it is not empty
    for value in SERVER_SECRETS:
        assert value not in log


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


# -- 2. deliveries that must not lead anywhere ----------------------------------------------


def oversized(server: SluiceServer, forge: str, headers: dict[str, str]) -> int:
    """Announce a body over 25 MB, send the first megabyte and read the answer."""
    host, port = "127.0.0.1", server.port
    with socket.create_connection((host, port), timeout=10) as sock:
        head = [f"POST /webhooks/{forge} HTTP/1.1", f"Host: {host}:{port}"]
        head += [f"{k}: {v}" for k, v in headers.items() if k != "Content-Type"]
        head += ["Content-Type: application/json", f"Content-Length: {25 * 1024 * 1024 + 1}"]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        with contextlib.suppress(OSError):  # the server may answer and close early
            sock.sendall(b"{" + b" " * (1024 * 1024))
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def test_forged_replayed_malformed_oversized_and_unsupported_deliveries(stack: Stack):
    repo = "acme/intake"
    victim = stack.gh_pull(repo, "clean", number=7)
    payload = stack.gh.pull_request_event(repo, 7)
    url = f"{stack.server.url}/webhooks/github"

    forged = github_delivery("pull_request", payload, secret="not-the-secret")
    assert requests.post(url, **forged, timeout=10).status_code == 401
    unsigned = github_delivery("pull_request", payload)
    del unsigned["headers"]["X-Hub-Signature-256"]
    assert requests.post(url, **unsigned, timeout=10).status_code == 401
    malformed = github_delivery("pull_request", None, body=b'{"action": "opened", ')
    assert requests.post(url, **malformed, timeout=10).status_code == 400
    not_a_pr = github_delivery("pull_request", {"action": "opened", "number": 7})
    assert requests.post(url, **not_a_pr, timeout=10).status_code == 400
    big = github_delivery("pull_request", payload)["headers"]
    assert oversized(stack.server, "github", big) == 413
    push = requests.post(url, **github_delivery("push", {"ref": "refs/tags/v1"}), timeout=10)
    assert push.status_code == 202 and push.json()["status"] == "ignored"
    assert "push" in push.json()["reason"]
    labeled = stack.gh.pull_request_event(repo, 7, action="labeled")
    answer = stack.server.github("pull_request", labeled)
    assert answer.status_code == 202 and answer.json()["status"] == "ignored"

    gl_url = f"{stack.server.url}/webhooks/gitlab"
    mr = stack.gl_mr("acme/intake-gl", "clean", iid=3)
    hook = stack.gl.merge_request_hook(mr)
    assert stack.server.gitlab("Merge Request Hook", hook, token="wrong").status_code == 401
    no_token = {"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Event-UUID": "u-1"}
    assert requests.post(gl_url, json=hook, headers=no_token, timeout=10).status_code == 401
    pipeline = stack.server.gitlab("Pipeline Hook", {"object_kind": "pipeline"})
    assert pipeline.status_code == 202 and pipeline.json()["status"] == "ignored"
    big = {"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": GL_SECRET}
    assert oversized(stack.server, "gitlab", big | {"X-Gitlab-Event-UUID": "u-2"}) == 413

    # A replayed delivery id is answered "duplicate" and never runs again.
    replayed = stack.gh_pull(repo, "clean2", number=8)
    first = stack.gh_event(replayed, delivery="delivery-replay-1")
    again = stack.gh_event(replayed, delivery="delivery-replay-1")
    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    stack.gh_wait(repo, stack.repo.sha["clean2"])
    assert len(stack.gh_reports(replayed)) == 1
    assert len(stack.jobs().jobs("github:acme/intake#8")) == 1

    # None of the rejected deliveries left a job, a comment or a status behind.
    assert stack.jobs().jobs("github:acme/intake#7") == []
    assert stack.jobs().jobs("gitlab:acme/intake-gl#3") == []
    assert stack.gh.comments(repo, victim.number) == []
    assert stack.gh.statuses(repo, stack.repo.sha["clean"]) == []
    assert stack.gl.notes(mr) == []


# -- secrets -----------------------------------------------------------------------------


def test_a_secret_change_shows_no_value_and_the_logs_hold_no_credentials(stack: Stack):
    repo, sha = "acme/secrets", stack.repo.sha
    pull = stack.gh_pull(repo, "secret", number=9)
    stack.gh_event(pull)
    final = stack.gh_wait(repo, sha["secret"])
    assert states(final) == EXPECTED["secret"]
    (report,) = stack.gh_reports(pull)
    assert "Secret" in report.body and "vault" in report.body  # the change is shown...
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    shown = [report.body, *(f"{s.description} {s.target_url}" for s in final.values())]
    for text in shown:  # ...but never its value
        assert SECRET_VALUE not in text and encoded not in text
        assert "initial-value-0" not in text
    log = stack.server.log()
    assert "job" in log and "queued" in log  # the log is the server's, and it is not empty
    for value in (*SERVER_SECRETS, SECRET_VALUE, encoded):
        assert value not in log


# -- 3. /approve-policy ---------------------------------------------------------------------


def test_approve_policy_needs_maintain_and_binds_to_the_head_sha(commands_stack: Stack):
    stack = commands_stack
    repo, sha = "acme/approvals", stack.repo.sha
    pull = stack.gh_pull(repo, "deny", number=3)
    stack.gh.set_permission(repo, "wendy", "write")
    stack.gh.set_permission(repo, "maya", "maintain")
    stack.gh_event(pull)
    assert stack.gh_wait(repo, sha["deny"])["sluice/policy"].state == "failure"

    refused = stack.gh_say(pull, "/approve-policy we accept the risk", author="wendy")
    reply = stack.gh_reply(pull, "@wendy")
    assert "needs maintain access" in reply.body and "/approve-policy" in reply.body
    assert stack.gh.reactions(refused) == []
    assert stack.gh_final(repo, sha["deny"])["sluice/policy"].state == "failure"

    approved = stack.gh_say(pull, "/approve-policy pinned next sprint (JIRA-12)", author="maya")
    wait_for(
        lambda: stack.gh_final(repo, sha["deny"])["sluice/policy"].state == "success",
        30,
        "the policy status to turn green",
    )
    policy = stack.gh_final(repo, sha["deny"])["sluice/policy"]
    assert "approved by @maya" in policy.description
    assert [r.content for r in stack.gh.reactions(approved)] == ["eyes"]
    (report,) = stack.gh_reports(pull)
    assert "Policy override" in report.body and "maya" in report.body
    assert "pinned next sprint" in report.body

    # A new push with the same violation is a new decision: red again, old SHA stays green.
    stack.gh_push(pull, "deny2")
    final = stack.gh_wait(repo, sha["deny2"])
    assert states(final) == EXPECTED["deny2"]
    assert stack.gh_final(repo, sha["deny"])["sluice/policy"].state == "success"
    wait_for(
        lambda: "Policy override" not in stack.gh_reports(pull)[0].body, 10, "the override to go"
    )
    assert len(stack.gh_reports(pull)) == 1


def test_approve_policy_limited_to_configured_owners(tmp_path: Path, gitops: GitOpsRepo):
    config = {"repos": [{"match": "github:acme/*", "policy_owners": {"users": ["carol"]}}]}
    with running_stack(tmp_path, gitops, config) as owners:
        repo, sha = "acme/owned", gitops.sha
        pull = owners.gh_pull(repo, "deny", number=4)
        owners.gh.set_permission(repo, "adam", "admin")
        owners.gh.set_permission(repo, "carol", "maintain")
        owners.gh_event(pull)
        assert owners.gh_wait(repo, sha["deny"])["sluice/policy"].state == "failure"

        owners.gh_say(pull, "/approve-policy", author="adam")
        reply = owners.gh_reply(pull, "@adam")
        assert "not a policy owner" in reply.body and "carol" in reply.body
        assert owners.gh_final(repo, sha["deny"])["sluice/policy"].state == "failure"

        owners.gh_say(pull, "/approve-policy accepted by security", author="carol")
        wait_for(
            lambda: owners.gh_final(repo, sha["deny"])["sluice/policy"].state == "success",
            30,
            "the owner's override",
        )
        assert "Policy override" in owners.gh_reports(pull)[0].body
        assert len(owners.gh_reports(pull)) == 1
    assert_log_holds_no_credentials(owners.server)


# -- 4. chat-ops ----------------------------------------------------------------------------


def test_chat_ops_help_typos_diff_sync_and_what_is_never_a_command(commands_stack: Stack):
    stack = commands_stack
    repo, sha = "acme/chatops", stack.repo.sha
    pull = stack.gh_pull(repo, "clean", number=5)
    stack.gh.set_permission(repo, "dana", "write")
    stack.gh_event(pull)
    stack.gh_wait(repo, sha["clean"])
    (report,) = stack.gh_reports(pull)
    assert "worker" not in report.body  # only the affected app is shown

    helped = stack.gh_say(pull, "/help", author="dana")
    help_reply = stack.gh_reply(pull, "/approve-policy")
    assert "/diff" in help_reply.body and help_reply.body.startswith("@dana")
    assert [r.content for r in stack.gh.reactions(helped)] == ["eyes"]

    stack.gh_say(pull, "thanks!\n/dif web", author="dana")
    typo = stack.gh_reply(pull, "Did you mean")
    assert "/diff" in typo.body

    stack.gh_say(pull, "/diff worker", author="dana")
    wait_for(lambda: "worker" in stack.gh_reports(pull)[0].body, 30, "worker in the report")
    assert [c.id for c in stack.gh_reports(pull)] == [report.id]

    stack.gh_say(pull, "/sync", author="dana")
    sync = stack.gh_reply(pull, "deploys are not configured")
    assert sync.body.startswith("@dana\n\n`/sync`")  # the mention on its own line

    # The bot's own comments and edited comments are never commands.
    own = stack.gh.add_comment(repo, pull.number, "/help", author=BOT)
    before = len(stack.gh_bot_comments(pull))
    answer = stack.server.github("issue_comment", stack.gh.issue_comment_event(repo, own))
    assert answer.status_code == 202 and answer.json()["status"] == "ignored"
    stack.gh_say(pull, "/help", author="dana", action="edited")
    stack.gh_say(pull, "/dif", author="dana")  # a marker that every job before it ran
    wait_for(lambda: len(stack.gh_bot_comments(pull)) == before + 1, 30, "the marker reply")
    assert "Did you mean" in stack.gh_bot_comments(pull)[-1].body
    assert stack.gh.reactions(own) == []

    # A pull request from a fork gets a preview but never a deploy command.
    stack.gh.add_repo("mallory/gitops", clone_url=stack.repo.clone_url, fork_of=repo)
    fork = stack.gh_pull(repo, "unsigned", number=6, head_repo="mallory/gitops")
    stack.gh_event(fork)
    assert states(stack.gh_wait(repo, sha["unsigned"])) == EXPECTED["unsigned"]
    assert len(stack.gh_reports(fork)) == 1
    stack.gh_say(fork, "/sync", author="dana")
    refusal = stack.gh_reply(fork, "fork")
    assert "/sync" in refusal.body and "deploys are not configured" not in refusal.body


# -- 5. restart -----------------------------------------------------------------------------


def test_sigkill_with_jobs_queued_and_running_loses_and_duplicates_nothing(
    tmp_path: Path, gitops: GitOpsRepo
):
    branches = ["clean", "deny", "unsigned", "secret", "clean2", "deny2"]
    with running_stack(tmp_path, gitops) as s:
        s.gh.latency_s = 0.15  # each preview takes about two seconds of API calls
        pulls = [
            s.gh_pull(f"acme/restart-{i}", branch, number=i + 1)
            for i, branch in enumerate(branches)
        ]
        for pull in pulls:
            assert s.gh_event(pull).status_code == 202
        jobs = s.jobs()

        def mid_flight() -> bool:
            stats = jobs.stats().by_state
            reported = sum(len(s.gh_reports(p)) for p in pulls)
            return stats["running"] >= 1 and stats["queued"] >= 1 and reported >= 1

        wait_for(mid_flight, 30, "a report posted while other jobs still run or wait")
        s.server.kill()
        unfinished = [j.id for j in jobs.jobs() if j.state in ("queued", "running")]
        assert unfinished, "the kill came too late to test anything"

        s.gh.latency_s = 0.0
        s.server.start()
        for pull, branch in zip(pulls, branches, strict=True):
            # Well within the 60 s lease: the new pool adopts the dead pool's jobs.
            final = s.gh_wait(pull.repo, gitops.sha[branch], timeout=55)
            assert states(final) == EXPECTED[branch], (pull.repo, branch)
        wait_for(lambda: all(j.state == "done" for j in jobs.jobs()), 30, "every job to be done")
        for pull in pulls:
            assert len(s.gh_bot_comments(pull)) == 1, pull.repo
            assert len(s.gh_reports(pull)) == 1, pull.repo
        assert len(jobs.jobs()) == len(pulls)
    assert_log_holds_no_credentials(s.server)


# -- 6. an unreliable forge -----------------------------------------------------------------


def final_summary(final: dict) -> dict[str, tuple[str, str]]:
    return {name: (s.state, s.description) for name, s in final.items()}


def test_twenty_percent_forge_faults_still_end_with_the_right_comment_and_statuses(
    tmp_path: Path, gitops: GitOpsRepo
):
    branches = ["clean", "deny", "unsigned"]
    with running_stack(tmp_path, gitops) as s:
        # The reference: the same pull requests while the forge has no faults.
        reference = {}
        refs = [s.gh_pull(f"acme/reference-{i}", b, number=1) for i, b in enumerate(branches)]
        for pull in refs:
            s.gh_event(pull)
        for pull, branch in zip(refs, branches, strict=True):
            reference[branch] = final_summary(s.gh_wait(pull.repo, gitops.sha[branch]))

        s.gh.fail_randomly(
            0.2, ghemu.Fault.error(502), ghemu.Fault.too_many(1), ghemu.Fault.stall(0.5), seed=3
        )
        s.gl.fail_randomly(
            0.2,
            glemu.Fault.server_error(503),
            glemu.Fault.rate_limited(1),
            glemu.Fault.timeout(0.5),
            seed=5,
        )
        pulls = [s.gh_pull(f"acme/flaky-{i}", b, number=1) for i, b in enumerate(branches)]
        mrs = [s.gl_mr(f"acme/flaky-{i}", b) for i, b in enumerate(branches)]
        for pull in pulls:
            assert s.gh_event(pull).status_code == 202
        for mr in mrs:
            assert s.gl_event(mr).status_code == 202

        for pull, branch in zip(pulls, branches, strict=True):
            final = s.gh_wait(pull.repo, gitops.sha[branch], timeout=90)
            assert final_summary(final) == reference[branch], branch
            (report,) = s.gh_reports(pull)
            assert s.gh_bot_comments(pull) == [report]
            assert f"`{gitops.sha[branch][:7]}`" in report.body
        for mr, branch in zip(mrs, branches, strict=True):
            final = s.gl_wait(mr, gitops.sha[branch], timeout=90)
            expected = {
                name: (GITLAB_STATES[state], reference[branch][name][1])
                for name, (state, _) in reference[branch].items()
            }
            assert {n: (st.state, st.description) for n, st in final.items()} == expected
            (note,) = s.gl_reports(mr)
            assert [n for n in s.gl.notes(mr) if n.author.username == BOT] == [note]
        faulted_gh = sum(1 for r in s.gh.requests if r.status in (None, 429, 502))
        faulted_gl = sum(1 for r in s.gl.requests if r.status in (0, 429, 503))
        assert faulted_gh >= 3 and faulted_gl >= 3, (faulted_gh, faulted_gl)
    assert_log_holds_no_credentials(s.server)

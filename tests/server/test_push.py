"""A direct push to the tracked branch: a preview comment on the pushed commit, the three
gate statuses, and no deploy unless the installation allows push deploys.

Parsing uses GitHub's published examples (@octokit/webhooks-examples 7.6.1, MIT) and the
emulators' payload builders; the flows run the real ``sluice serve`` (GitHub) or the real
handlers (GitLab) over real HTTP against the emulated forges and a real bare git repo.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.config.server import ServerConfig
from bot.deploy.overrides import OverrideStore
from bot.forge.base import ForgeError
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.forge.webhooks import (
    PayloadError,
    PushEvent,
    Unsupported,
    event_from_dict,
    event_to_dict,
    parse_github,
    parse_gitlab,
)
from bot.gitops import Mirrors
from bot.report import MARKER
from bot.server.handlers import NO_DEPLOYS_NOTE, BotHandlers
from bot.server.publish import upsert_commit_report
from bot.server.storage.queue import JobQueue
from bot.server.web import job_for
from bot.server.worker import CancelToken
from tests.botkit import (
    GH_TOKEN,
    GL_TOKEN,
    SERVER_SECRETS,
    GitOpsRepo,
    SluiceServer,
    build_gitops_repo,
    server_env,
    wait_for,
)
from tests.emulators import github as ghemu
from tests.emulators import gitlab as glemu
from tests.gpgkit import make_ssh_key

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).parents[1] / "data" / "webhooks"
BOT = "sluice-bot"
REPO = "acme/gitops"
CONTEXTS = {"sluice/preview", "sluice/policy", "sluice/signatures"}
ZERO = "0" * 40


def octokit_push(name: str) -> dict[str, Any]:
    return json.loads((DATA / "github_push_octokit_examples.json").read_text())[name]


def github_headers(delivery: str = "d-1") -> dict[str, str]:
    return {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery}


def gitlab_headers(event: str = "Push Hook") -> dict[str, str]:
    return {"X-Gitlab-Event": event, "X-Gitlab-Event-UUID": str(uuid.uuid4())}


def config(tmp_path: Path, repos: list[dict[str, Any]] | None = None) -> ServerConfig:
    env = {
        "SLUICE_DATA_DIR": str(tmp_path / "data"),
        "SLUICE_GITHUB_WEBHOOK_SECRET": "s",
        "SLUICE_GITHUB_TOKEN": "t",
        "SLUICE_GITLAB_URL": "https://gitlab.example.com",
        "SLUICE_GITLAB_TOKEN": "t",
        "SLUICE_GITLAB_WEBHOOK_SECRET": "s",
    }
    config_file = None
    if repos is not None:
        config_file = tmp_path / "server.yaml"
        config_file.write_text(json.dumps({"repos": repos}))
    return ServerConfig.from_env(env, config_file)


# -- parsing ---------------------------------------------------------------------------------


def test_github_push_to_the_tracked_branch_is_one_push_job_per_branch(tmp_path: Path):
    before, after = "a" * 40, "b" * 40
    with ghemu.running() as gh:
        gh.add_repo(REPO)
        payload = gh.push_event(REPO, before=before, after=after, pusher="alice", forced=True)
    delivery = parse_github(github_headers(), json.dumps(payload).encode())
    event = delivery.event
    assert isinstance(event, PushEvent)
    assert (event.forge, event.repo.full_name, event.branch) == ("github", REPO, "main")
    assert (event.before, event.after, event.pusher, event.forced) == (before, after, "alice", True)
    assert event.repo.clone_url.endswith(f"/{REPO}.git")
    assert event_from_dict(event_to_dict(event)) == event

    job = job_for(config(tmp_path), event)
    assert not isinstance(job, Unsupported)
    assert (job.kind, job.pr_key, job.head_sha) == ("push", f"github:{REPO}@main", after)
    assert job.supersedes is False  # every pushed commit gets its own report
    assert event_from_dict(job.payload) == event


def test_github_tags_deletions_and_untracked_branches_are_ignored_with_a_reason(
    tmp_path: Path,
):
    for name in ("tag_created", "tag_deleted"):
        event = parse_github(github_headers(), json.dumps(octokit_push(name)).encode()).event
        assert isinstance(event, Unsupported)
        assert "tag 'simple-tag'" in event.reason

    created = octokit_push("branch_created")  # refs/heads/master, before all zeros
    event = parse_github(github_headers(), json.dumps(created).encode()).event
    assert isinstance(event, PushEvent)
    assert (event.branch, event.created, event.pusher) == ("master", True, "Codertocat")
    assert job_for(config(tmp_path), event) == Unsupported("push to a branch Sluice does not track")
    tracks_master = config(tmp_path, [{"match": "Codertocat/*", "tracked_branch": "master"}])
    ignored = job_for(tracks_master, event)
    assert isinstance(ignored, Unsupported) and "created the tracked branch" in ignored.reason

    with ghemu.running() as gh:
        gh.add_repo(REPO)
        deleted = gh.push_event(REPO, before="a" * 40, after=ZERO)
        feature = gh.push_event(REPO, ref="refs/heads/feature", before="a" * 40, after="b" * 40)
    event = parse_github(github_headers(), json.dumps(deleted).encode()).event
    assert event == Unsupported("push deleted branch 'main'")
    event = parse_github(github_headers(), json.dumps(feature).encode()).event
    assert isinstance(event, PushEvent)
    assert job_for(config(tmp_path), event) == Unsupported("push to a branch Sluice does not track")

    del feature["after"]
    with pytest.raises(PayloadError, match="'after'"):
        parse_github(github_headers(), json.dumps(feature).encode())


def test_gitlab_push_hook_follows_the_tracked_branch_of_the_repo_settings(tmp_path: Path):
    with glemu.running() as gl:
        project = gl.add_project("grp/deploys", id=42)
        alice = gl.add_user("alice")
        to_prod = gl.push_hook(
            project, ref="refs/heads/production", before="a" * 40, after="b" * 40, user=alice
        )
        to_main = gl.push_hook(project, before="a" * 40, after="b" * 40, user=alice)
        deleted = gl.push_hook(project, ref="refs/heads/production", before="a" * 40, after=ZERO)
        tag = gl.push_hook(project, ref="refs/tags/v1", before=ZERO, after="c" * 40)
    event = parse_gitlab(gitlab_headers(), json.dumps(to_prod).encode()).event
    assert isinstance(event, PushEvent)
    assert (event.forge, event.repo.full_name, event.repo.project_id) == (
        "gitlab",
        "grp/deploys",
        42,
    )
    assert (event.branch, event.before, event.after, event.pusher) == (
        "production",
        "a" * 40,
        "b" * 40,
        "alice",
    )
    assert event_from_dict(event_to_dict(event)) == event

    settings = config(tmp_path, [{"match": "gitlab:grp/*", "tracked_branch": "production"}])
    job = job_for(settings, event)
    assert not isinstance(job, Unsupported)
    assert (job.kind, job.pr_key) == ("push", "gitlab:grp/deploys@production")
    main_event = parse_gitlab(gitlab_headers(), json.dumps(to_main).encode()).event
    assert isinstance(main_event, PushEvent)
    assert job_for(settings, main_event) == Unsupported("push to a branch Sluice does not track")

    assert parse_gitlab(gitlab_headers(), json.dumps(deleted).encode()).event == Unsupported(
        "push deleted branch 'production'"
    )
    assert parse_gitlab(gitlab_headers(), json.dumps(tag).encode()).event == Unsupported(
        "push of tag 'v1'"
    )
    tag_hook = parse_gitlab(gitlab_headers("Tag Push Hook"), json.dumps(tag).encode())
    assert isinstance(tag_hook.event, Unsupported)


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gitops(tmp_path_factory: pytest.TempPathFactory) -> GitOpsRepo:
    return build_gitops_repo(tmp_path_factory.mktemp("gitops"))


def push_main(gitops: GitOpsRepo, branch: str) -> tuple[str, str]:
    """Move the bare repo's main to ``branch``'s head, as a direct push would."""
    before, after = gitops.sha["main"], gitops.sha[branch]
    subprocess.run(
        ["git", "--git-dir", str(gitops.bare), "update-ref", "refs/heads/main", after, before],
        check=True,
    )
    return before, after


def has_ledger(gitops: GitOpsRepo) -> bool:
    proc = subprocess.run(
        ["git", "--git-dir", str(gitops.bare), "rev-parse", "--verify", "--quiet",
         "refs/heads/sluice/ledger"],
        capture_output=True,
    )  # fmt: skip
    return proc.returncode == 0


@dataclass
class GitHubStack:
    gh: ghemu.GitHubEmulator
    server: SluiceServer
    data_dir: Path

    def final(self, sha: str, rounds: int = 1) -> dict[str, ghemu.Status]:
        def settled() -> dict[str, ghemu.Status] | None:
            posted = self.gh.statuses(REPO, sha)
            latest = {s.context: s for s in posted}
            done = (
                len(latest) == 3
                and all(s.state != "pending" for s in latest.values())
                and sum(s.state != "pending" for s in posted) >= 3 * rounds
            )
            return latest if done else None

        return wait_for(settled, 60, f"final statuses on {sha[:7]} (round {rounds})")

    def jobs_done(self, key: str, count: int) -> bool:
        jobs = JobQueue(self.data_dir / "sluice.db").jobs(key)
        return len(jobs) == count and all(j.state == "done" for j in jobs)


@pytest.fixture
def github_stack(tmp_path: Path, gitops: GitOpsRepo) -> Iterator[GitHubStack]:
    gh = ghemu.GitHubEmulator(bot_login=BOT, bot_token=GH_TOKEN).start()
    gh.add_repo(REPO, clone_url=gitops.clone_url)
    bot_key = make_ssh_key(tmp_path / "bot-key", "sluice-bot")
    data_dir = tmp_path / "data"
    env = server_env(data_dir, github_url=gh.base_url, keys=gitops.keys)
    # A signing key turns deploys on: the promoter is there, and it refuses the push.
    env |= {"SLUICE_SIGNING_METHOD": "ssh", "SLUICE_SIGNING_KEY": str(bot_key.private)}
    server = SluiceServer(env, tmp_path / "serve.log")
    try:
        server.start()
        yield GitHubStack(gh, server, data_dir)
    finally:
        server.stop()
        gh.stop()


def test_github_direct_push_gets_one_commit_report_three_statuses_and_no_deploy(
    github_stack: GitHubStack, gitops: GitOpsRepo
):
    gh, server = github_stack.gh, github_stack.server
    before, after = push_main(gitops, "clean")
    try:
        payload = gh.push_event(REPO, before=before, after=after, pusher="alice")
        response = server.github("push", payload)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"

        final = github_stack.final(after)
        assert {c: s.state for c, s in final.items()} == dict.fromkeys(CONTEXTS, "success")
        reports = gh.commit_comments(REPO, after)
        assert len(reports) == 1
        report = reports[0]
        assert report.author == BOT and MARKER in report.body
        assert "**Sluice (direct push): passed**" in report.body
        assert "web" in report.body  # the app the push changed
        assert "Sluice deploys only merged pull requests" in report.body
        assert f"`{before[:12]}..{after[:12]}`" in report.body
        assert all(s.target_url and "#commitcomment-" in s.target_url for s in final.values())
        assert gh.commit_comments(REPO, before) == []
        assert not has_ledger(gitops)

        # GitHub redelivers the same push under a new delivery id: the report is edited
        # in place (here: left as it is, nothing changed), never posted twice.
        again = server.github("push", payload)
        assert again.status_code == 202 and again.json()["status"] == "queued"
        github_stack.final(after, rounds=2)
        key = f"github:{REPO}@main"
        wait_for(lambda: github_stack.jobs_done(key, 2), 30, "both push jobs to finish")
        assert [c.id for c in gh.commit_comments(REPO, after)] == [report.id]
        assert len(gh.requests_to("POST", r"/commits/[0-9a-f]{40}/comments$")) == 1
        assert not has_ledger(gitops)

        # A push to a branch Sluice does not track is answered and dropped.
        other = gh.push_event(REPO, ref="refs/heads/feature", before=before, after=after)
        ignored = server.github("push", other)
        assert ignored.status_code == 202
        assert ignored.json() == {
            "status": "ignored",
            "reason": "push to a branch Sluice does not track",
        }
        log = server.log()
        assert not any(secret in log for secret in SERVER_SECRETS)
    finally:
        push_back = ["update-ref", "refs/heads/main", before, after]
        subprocess.run(["git", "--git-dir", str(gitops.bare), *push_back], check=True)


def test_gitlab_direct_push_gets_one_commit_note_even_when_the_job_runs_twice(
    tmp_path: Path, gitops: GitOpsRepo
):
    before, after = gitops.sha["main"], gitops.sha["deny"]
    with glemu.running(token=GL_TOKEN, bot_username=BOT) as gl:
        project = gl.add_project("grp/gitops", http_url=gitops.clone_url)
        pusher = gl.add_user("bob")
        env = {
            "SLUICE_DATA_DIR": str(tmp_path / "data"),
            "SLUICE_GITLAB_URL": gl.url,
            "SLUICE_GITLAB_TOKEN": GL_TOKEN,
            "SLUICE_GITLAB_WEBHOOK_SECRET": "gl-secret",
            "SLUICE_TRUSTED_KEYS": str(gitops.keys),
        }
        server_config = ServerConfig.from_env(env)
        server_config.data_dir.mkdir(parents=True)
        event = parse_gitlab(
            gitlab_headers(),
            json.dumps(gl.push_hook(project, before=before, after=after, user=pusher)).encode(),
        ).event
        assert isinstance(event, PushEvent)
        new_job = job_for(server_config, event)
        assert not isinstance(new_job, Unsupported)
        queue = JobQueue(server_config.db_path)
        queue.enqueue(new_job)
        job = queue.claim("test-worker", 60)
        assert job is not None and job.kind == "push"
        handlers = BotHandlers(
            config=server_config,
            forges={"gitlab": GitLabForge(url=gl.url, token=GL_TOKEN)},
            mirrors=Mirrors(tmp_path / "mirrors"),
            overrides=OverrideStore(queue.database),
            cache_dir=tmp_path / "cache",
        )
        for _ in range(2):  # at-least-once: the worker may run a job twice
            handlers.handle(job, CancelToken(queue, job))

        notes = gl.commit_comments(project, after)
        assert len(notes) == 1
        assert notes[0].author.username == BOT
        assert MARKER in notes[0].note and "Sluice (direct push)" in notes[0].note
        assert NO_DEPLOYS_NOTE in notes[0].note
        assert "@bob" in notes[0].note
        latest = gl.latest_statuses(project, after)
        assert {name: s.state for name, s in latest.items()} == {
            "sluice/preview": "success",
            "sluice/policy": "failed",  # the push moved web to the :latest tag
            "sluice/signatures": "success",
        }
        assert gl.commit_comments(project, before) == []
        assert gl.request_count("POST", "/repository/commits/") == 1
        assert not has_ledger(gitops)


def test_a_changed_report_edits_the_github_commit_comment_and_stands_on_gitlab():
    sha = "c" * 40
    with ghemu.running(bot_login=BOT, bot_token=GH_TOKEN) as gh:
        gh.add_repo(REPO)
        forge = GitHubForge(base_url=gh.base_url, token=GH_TOKEN)
        repo = parse_github(
            github_headers(), json.dumps(gh.push_event(REPO, before="a" * 40, after=sha)).encode()
        ).event.repo
        first = upsert_commit_report(forge, repo, sha, f"{MARKER}\nold", BOT)
        second = upsert_commit_report(forge, repo, sha, f"{MARKER}\nnew", BOT)
        assert second.id == first.id
        assert [c.body for c in gh.commit_comments(REPO, sha)] == [f"{MARKER}\nnew"]
        assert len(gh.requests_to("PATCH", rf"/repos/{REPO}/comments/{first.id}$")) == 1

    with glemu.running(token=GL_TOKEN, bot_username=BOT) as gl:
        project = gl.add_project("grp/gitops")
        gl.add_commit(project, sha)
        forge = GitLabForge(url=gl.url, token=GL_TOKEN)
        hook = gl.push_hook(project, before="a" * 40, after=sha)
        repo = parse_gitlab(gitlab_headers(), json.dumps(hook).encode()).event.repo
        first = upsert_commit_report(forge, repo, sha, f"{MARKER}\nold", BOT)
        kept = upsert_commit_report(forge, repo, sha, f"{MARKER}\nnew", BOT)
        assert kept.body == first.body == f"{MARKER}\nold"
        assert first.url == f"{gl.url}/grp/gitops/-/commit/{sha}"
        assert [c.note for c in gl.commit_comments(project, sha)] == [f"{MARKER}\nold"]
        with pytest.raises(ForgeError, match="404"):
            forge.create_commit_comment(repo, "d" * 40, "on a commit GitLab does not know")

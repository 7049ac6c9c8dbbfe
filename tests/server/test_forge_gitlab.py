"""The GitLab backend against the GitLab API emulator, over real HTTP."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gitlab
import pytest

from bot.forge.base import ForgeError, Permission, PullRequest, RepoRef
from bot.forge.gitlab import GitLabForge, access_level_permission, normalize_url
from bot.forge.retry import Retrier, WritePacer
from tests.emulators.gitlab import (
    DEVELOPER,
    GUEST,
    MAINTAINER,
    OWNER,
    REPORTER,
    Fault,
    FileChange,
    GitLabEmulator,
    MergeRequest,
    Project,
    User,
)

TOKEN = "glpat-s3cret-t0ken-value"
HEAD = "a" * 40
BASE = "b" * 40
MAIN_TIP = "c" * 40
FORK_HEAD = "d" * 40
MERGED = "e" * 40


@dataclass
class World:
    emu: GitLabEmulator
    project: Project
    fork: Project
    alice: User
    bob: User
    carol: User
    mr: MergeRequest
    fork_mr: MergeRequest
    repo: RepoRef


@pytest.fixture
def world(tmp_path) -> World:
    with GitLabEmulator(token=TOKEN) as emu:
        alice, bob, carol = emu.add_user("alice"), emu.add_user("bob"), emu.add_user("carol")
        project = emu.add_project(
            "acme/platform/gitops", id=42, http_url=str(tmp_path / "gitops.git")
        )
        fork = emu.add_project(
            "bob/gitops", id=77, http_url=str(tmp_path / "fork.git"), forked_from=project
        )
        emu.add_branch(project, "main", MAIN_TIP)
        mr = emu.add_merge_request(
            project,
            iid=7,
            title="Bump web to 1.2",
            source_branch="feature/web",
            target_branch="main",
            sha=HEAD,
            base_sha=BASE,
            author=alice,
            changes=[FileChange.modified("apps/web/deploy.yaml")],
        )
        fork_mr = emu.add_merge_request(
            project,
            iid=8,
            source_project=fork,
            source_branch="main",
            target_branch="main",
            sha=FORK_HEAD,
            base_sha=BASE,
            author=bob,
            draft=True,
        )
        repo = RepoRef("gitlab", "acme/platform/gitops", str(tmp_path / "gitops.git"))
        yield World(emu, project, fork, alice, bob, carol, mr, fork_mr, repo)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def forge(world: World, sleeps: list[float]) -> GitLabForge:
    return make_forge(world.emu, sleeps)


def make_forge(emu: GitLabEmulator, sleeps: list[float], **options) -> GitLabForge:
    options.setdefault("retrier", Retrier(attempts=4, base_delay_s=0.01, sleep=sleeps.append))
    options.setdefault("write_pacer", WritePacer(limit=1000))
    options.setdefault("timeout_s", 2)
    return GitLabForge(url=emu.url, token=options.pop("token", TOKEN), **options)


def raw_client(emu: GitLabEmulator) -> gitlab.Gitlab:
    """python-gitlab without the backend: to show what the API itself answers."""
    return gitlab.Gitlab(emu.url, private_token=TOKEN, retry_transient_errors=False)


def pr_of(forge: GitLabForge, world: World, iid: int = 7) -> PullRequest:
    return forge.get_pull_request(world.repo, iid)


# ---------------------------------------------------------------- reading


def test_bot_login_is_the_token_owner(forge):
    assert forge.bot_login() == "sluice-bot"


def test_get_pull_request_maps_merge_request(forge, world):
    pr = pr_of(forge, world)

    assert (pr.number, pr.title, pr.author) == (7, "Bump web to 1.2", "alice")
    assert (pr.base_ref, pr.base_sha, pr.head_ref, pr.head_sha) == (
        "main",
        BASE,
        "feature/web",
        HEAD,
    )
    assert (pr.is_fork, pr.draft, pr.state, pr.merge_sha) == (False, False, "open", None)
    assert pr.url == f"{world.emu.url}/acme/platform/gitops/-/merge_requests/7"
    assert pr.head_clone_url == world.repo.clone_url
    assert pr.repo.project_id == 42  # learned from the MR when the caller only had the path


def test_project_addressed_by_numeric_id_or_path(forge, world):
    by_id = forge.get_pull_request(
        RepoRef("gitlab", "acme/platform/gitops", world.repo.clone_url, project_id=42), 7
    )
    assert by_id == pr_of(forge, world)
    assert world.emu.request_count("GET", "/projects/42/merge_requests/7") == 1
    assert world.emu.request_count("GET", "/projects/acme%2Fplatform%2Fgitops/") == 1


def test_fork_merge_request_is_a_draft_fork_with_the_fork_clone_url(forge, world):
    pr = pr_of(forge, world, 8)

    assert pr.is_fork and pr.draft
    assert pr.head_sha == FORK_HEAD
    assert pr.head_clone_url == world.fork.http_url


def test_merged_and_closed_states(forge, world):
    world.mr.state, world.mr.merge_commit_sha = "merged", MERGED
    world.fork_mr.state = "closed"

    merged = pr_of(forge, world)
    assert (merged.state, merged.merge_sha) == ("merged", MERGED)
    assert pr_of(forge, world, 8).state == "closed"


def test_fast_forward_merge_reports_head_as_merge_sha(forge, world):
    world.mr.state = "merged"
    assert pr_of(forge, world).merge_sha == HEAD


def test_base_sha_falls_back_to_target_branch_while_diff_refs_are_missing(forge, world):
    world.mr.base_sha = None  # GitLab has not computed the diff yet: diff_refs is null
    assert pr_of(forge, world).base_sha == MAIN_TIP


def test_missing_merge_request_is_a_404_forge_error(forge, world, sleeps):
    with pytest.raises(ForgeError) as info:
        forge.get_pull_request(world.repo, 999)
    assert info.value.status == 404 and not info.value.transient
    assert sleeps == []


def test_changed_files_cover_every_page_and_both_sides_of_a_rename(forge, world):
    many = [FileChange.modified(f"apps/app{i:03}/kustomization.yaml") for i in range(230)]
    world.mr.changes = [
        *many,
        FileChange.renamed("apps/old/app.yaml", "apps/new/app.yaml"),
        FileChange.deleted("apps/gone/app.yaml"),
        FileChange.added("apps/fresh/app.yaml"),
    ]

    files = forge.changed_files(pr_of(forge, world))

    assert files[:230] == [c.new_path for c in many]
    assert files[230:] == [
        "apps/old/app.yaml",
        "apps/new/app.yaml",
        "apps/gone/app.yaml",
        "apps/fresh/app.yaml",
    ]
    assert world.emu.request_count("GET", "/merge_requests/7/diffs") == 3  # 100 per page


def test_changed_files_on_gitlab_before_15_7_use_changes(tmp_path, sleeps):
    with GitLabEmulator(token=TOKEN, diffs_endpoint=False, changes_limit=50) as emu:
        alice = emu.add_user("alice")
        project = emu.add_project("acme/gitops", http_url=str(tmp_path))
        emu.add_merge_request(
            project,
            source_branch="f",
            target_branch="main",
            sha=HEAD,
            base_sha=BASE,
            author=alice,
            changes=[FileChange.modified("a.yaml"), FileChange.renamed("b.yaml", "c.yaml")],
        )
        big = emu.add_merge_request(
            project,
            source_branch="g",
            target_branch="main",
            sha=FORK_HEAD,
            base_sha=BASE,
            author=alice,
            changes=[FileChange.modified(f"f{i}.yaml") for i in range(51)],
        )
        forge = make_forge(emu, sleeps)
        repo = RepoRef("gitlab", "acme/gitops", str(tmp_path))

        assert forge.changed_files(forge.get_pull_request(repo, 1)) == [
            "a.yaml",
            "b.yaml",
            "c.yaml",
        ]
        # A truncated list would let an affected app go unchecked: fail instead.
        with pytest.raises(ForgeError, match="more files"):
            forge.changed_files(forge.get_pull_request(repo, big.iid))


def test_gitlab_lists_notes_newest_first_but_comments_come_oldest_first(forge, world):
    for i in range(230):
        world.emu.add_note(world.mr, f"comment {i}", author=world.alice if i % 2 else world.bob)
        if i % 50 == 0:
            world.emu.add_note(world.mr, "added 1 commit", author=world.alice, system=True)

    first_page = (
        raw_client(world.emu)
        .projects.get(42, lazy=True)
        .mergerequests.get(7, lazy=True)
        .notes.list(per_page=3, get_all=False)
    )
    assert [n.body for n in first_page] == ["comment 229", "comment 228", "comment 227"]

    pr = pr_of(forge, world)
    before = world.emu.request_count("GET", "/merge_requests/7/notes")
    comments = forge.list_comments(pr)

    assert [c.body for c in comments] == [f"comment {i}" for i in range(230)]
    assert comments[1].author == "alice" and comments[0].author == "bob"
    assert (
        comments[0].url
        == f"{world.emu.url}/acme/platform/gitops/-/merge_requests/7#note_{comments[0].id}"
    )
    # 235 notes at 100 a page:
    assert world.emu.request_count("GET", "/merge_requests/7/notes") - before == 3


# ---------------------------------------------------------------- writing


def test_create_and_edit_comment(forge, world):
    pr = pr_of(forge, world)

    created = forge.create_comment(pr, "<!-- sluice:report -->\nfirst")
    edited = forge.edit_comment(pr, created.id, "<!-- sluice:report -->\nsecond")

    assert (created.author, edited.id) == ("sluice-bot", created.id)
    notes = world.emu.notes(world.mr)
    assert [(n.id, n.author.username, n.body) for n in notes] == [
        (created.id, "sluice-bot", "<!-- sluice:report -->\nsecond")
    ]
    assert [c.body for c in forge.list_comments(pr)] == ["<!-- sluice:report -->\nsecond"]


def test_editing_someone_elses_note_is_forbidden_and_not_retried(forge, world, sleeps):
    theirs = world.emu.add_note(world.mr, "/sync", author=world.alice)

    with pytest.raises(ForgeError) as info:
        forge.edit_comment(pr_of(forge, world), theirs.id, "hijacked")

    assert info.value.status == 403 and "403" in str(info.value)
    assert world.emu.notes(world.mr)[0].body == "/sync"
    assert sleeps == []


def test_set_status_maps_states_and_target_url(forge, world):
    forge.set_status(world.repo, HEAD, "sluice/preview", "success", "2 apps changed", "https://x/1")
    forge.set_status(world.repo, HEAD, "sluice/policy", "failure", "1 deny")
    forge.set_status(world.repo, HEAD, "sluice/signatures", "error", "gpg broke")

    latest = world.emu.latest_statuses(world.project, HEAD)
    assert {name: s.state for name, s in latest.items()} == {
        "sluice/preview": "success",
        "sluice/policy": "failed",
        "sluice/signatures": "failed",
    }
    preview = latest["sluice/preview"]
    assert (preview.description, preview.target_url) == ("2 apps changed", "https://x/1")


def test_repeated_pending_status_is_idempotent(forge, world):
    project = raw_client(world.emu).projects.get(42, lazy=True)
    project.commits.get(HEAD, lazy=True).statuses.create({"state": "pending", "name": "probe"})
    # What GitLab itself answers to the second pending:
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as info:
        project.commits.get(HEAD, lazy=True).statuses.create({"state": "pending", "name": "probe"})
    assert info.value.response_code == 400
    assert "Cannot transition status via :enqueue from :pending" in str(info.value)

    forge.set_status(world.repo, HEAD, "sluice/preview", "pending", "rendering")
    forge.set_status(world.repo, HEAD, "sluice/preview", "pending", "rendering")
    forge.set_status(world.repo, HEAD, "sluice/preview", "success", "done")
    forge.set_status(world.repo, HEAD, "sluice/preview", "pending", "re-run")

    states = [s.state for s in world.emu.statuses(world.project, HEAD) if s.name != "probe"]
    assert states == ["success", "pending"]  # the second pending changed nothing


def test_status_on_an_unknown_commit_fails(forge, world):
    with pytest.raises(ForgeError) as info:
        forge.set_status(world.repo, "f" * 40, "sluice/preview", "pending", "x")
    assert info.value.status == 404


def test_add_reaction_twice_awards_once(forge, world):
    note = world.emu.add_note(world.mr, "/diff", author=world.alice)
    awards = (
        raw_client(world.emu)
        .projects.get(42, lazy=True)
        .mergerequests.get(7, lazy=True)
        .notes.get(note.id, lazy=True)
        .awardemojis
    )
    awards.create({"name": "thumbsup"})
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as info:
        awards.create({"name": "thumbsup"})  # what GitLab answers to a repeated award
    assert info.value.response_code == 404

    other = world.emu.add_note(world.mr, "/policy", author=world.alice)
    pr = pr_of(forge, world)
    forge.add_reaction(pr, other.id, "eyes")
    forge.add_reaction(pr, other.id, "eyes")
    forge.add_reaction(pr, other.id, "+1")

    assert sorted(a.name for a in world.emu.awards(other)) == ["eyes", "thumbsup"]
    assert world.emu.request_count("POST", f"/notes/{other.id}/award_emoji") == 2


def test_award_already_given_by_someone_else_still_gets_ours(forge, world):
    note = world.emu.add_note(world.mr, "/diff", author=world.alice)
    world.emu.add_token("alice-token", world.alice)
    gitlab.Gitlab(world.emu.url, private_token="alice-token").projects.get(
        42, lazy=True
    ).mergerequests.get(7, lazy=True).notes.get(note.id, lazy=True).awardemojis.create(
        {"name": "eyes"}
    )

    forge.add_reaction(pr_of(forge, world), note.id, "eyes")

    assert sorted(a.user.username for a in world.emu.awards(note)) == ["alice", "sluice-bot"]


def test_lost_award_answer_is_retried_without_error(forge, world, sleeps):
    note = world.emu.add_note(world.mr, "/sync", author=world.alice)
    pr = pr_of(forge, world)
    # GitLab stores the award but the answer is lost; the retry must not fail on the 404.
    world.emu.script_faults(Fault.lost_response(method="POST", path="/award_emoji"))

    forge.add_reaction(pr, note.id, "eyes")

    assert [(a.name, a.user.username) for a in world.emu.awards(note)] == [("eyes", "sluice-bot")]
    assert len(sleeps) == 1


def test_reaction_on_a_missing_note_fails(forge, world):
    with pytest.raises(ForgeError) as info:
        forge.add_reaction(pr_of(forge, world), 424242, "eyes")
    assert info.value.status == 404


# ---------------------------------------------------------------- people


def test_permission_from_direct_and_inherited_membership(forge, world):
    emu = world.emu
    dave, erin = emu.add_user("dave"), emu.add_user("erin")
    emu.add_user("frank")
    emu.add_member(world.project, world.alice, DEVELOPER)
    emu.add_member(emu.add_group("acme"), world.bob, MAINTAINER)  # the top group
    emu.add_member(emu.add_group("acme/platform"), world.bob, REPORTER)
    emu.add_member(world.project, world.carol, REPORTER)
    emu.add_member(world.project, dave, GUEST)
    emu.add_member(emu.add_group("acme/platform"), erin, OWNER)

    # GitLab hides inherited members from /members/:id; only /members/all shows them.
    members = raw_client(emu).projects.get(42, lazy=True)
    with pytest.raises(gitlab.exceptions.GitlabGetError):
        members.members.get(world.bob.id)
    assert members.members_all.get(world.bob.id).access_level == MAINTAINER

    assert forge.permission(world.repo, "alice") is Permission.WRITE
    assert forge.permission(world.repo, "bob") is Permission.MAINTAIN  # highest inherited
    assert forge.permission(world.repo, "carol") is Permission.READ
    assert forge.permission(world.repo, "dave") is Permission.NONE
    assert forge.permission(world.repo, "erin") is Permission.ADMIN
    assert forge.permission(world.repo, "frank") is Permission.NONE  # not a member
    assert forge.permission(world.repo, "nobody-at-all") is Permission.NONE  # no such user
    assert forge.permission(world.repo, "ALICE") is Permission.WRITE  # usernames ignore case


def test_permission_on_a_missing_project_fails_closed(forge, world):
    missing = RepoRef("gitlab", "acme/nope", "/nowhere")
    with pytest.raises(ForgeError) as info:
        forge.permission(missing, "alice")
    assert info.value.status == 404


@pytest.mark.parametrize(
    ("level", "permission"),
    [(5, Permission.NONE), (10, Permission.NONE), (20, Permission.READ),
     (30, Permission.WRITE), (40, Permission.MAINTAIN), (50, Permission.ADMIN)],
)  # fmt: skip
def test_access_levels(level, permission):
    assert access_level_permission(level) is permission


def test_is_member_of_group_including_inherited_membership(forge, world):
    emu = world.emu
    emu.add_member(emu.add_group("acme"), world.alice, DEVELOPER)
    emu.add_member(emu.add_group("acme/platform"), world.carol, GUEST)

    assert forge.is_member(world.repo, "acme/platform", "alice")  # inherited from acme
    assert forge.is_member(world.repo, "@acme/platform", "carol")
    assert not forge.is_member(world.repo, "acme", "carol")  # membership does not flow up
    assert not forge.is_member(world.repo, "acme", "bob")
    assert not forge.is_member(world.repo, "acme", "ghost")
    with pytest.raises(ForgeError) as info:
        forge.is_member(world.repo, "no-such-group", "alice")
    assert info.value.status == 404


def test_clone_auth_uses_the_token(forge, world):
    assert forge.clone_auth(world.repo) == ("oauth2", TOKEN)


# ---------------------------------------------------------------- failures


def test_server_errors_are_retried(forge, world, sleeps):
    world.emu.script_faults(Fault.server_error(502), Fault.server_error(503))

    assert pr_of(forge, world).head_sha == HEAD
    assert len(sleeps) == 2 and all(0 < s <= 0.02 for s in sleeps)
    assert world.emu.request_count("GET", "/merge_requests/7") == 3


def test_rate_limit_waits_as_long_as_retry_after_says(forge, world, sleeps):
    world.emu.script_faults(Fault.rate_limited(retry_after=7, method="POST"))

    forge.create_comment(pr_of(forge, world), "hello")

    assert sleeps == [7.0]
    assert [n.body for n in world.emu.notes(world.mr)] == ["hello"]


def test_exhausted_rate_limit_is_429_with_retry_after(sleeps):
    with GitLabEmulator(token=TOKEN, rate_limit=3, rate_window_s=30) as emu:
        forge = make_forge(emu, sleeps, retrier=Retrier(attempts=2, sleep=sleeps.append))
        for _ in range(3):  # someone else uses up the budget
            raw_client(emu).auth()
        with pytest.raises(ForgeError) as info:
            forge.bot_login()
    assert info.value.status == 429 and info.value.transient
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 30


def test_dropped_connection_is_retried(forge, world, sleeps):
    world.emu.script_faults(Fault.drop(path="/notes"))

    assert forge.list_comments(pr_of(forge, world)) == []
    assert len(sleeps) == 1


def test_timeout_is_retried(world, sleeps):
    forge = make_forge(world.emu, sleeps, timeout_s=0.2)
    world.emu.script_faults(Fault.timeout(hold_s=0.5))

    assert forge.bot_login() == "sluice-bot"
    assert len(sleeps) == 1


def test_persistent_server_error_is_a_forge_error_without_the_token(forge, world, sleeps):
    pr = pr_of(forge, world)
    world.emu.fail_randomly(1.0, Fault.server_error(500))

    with pytest.raises(ForgeError) as info:
        forge.create_comment(pr, "x")

    error = info.value
    assert error.transient and error.status == 500
    assert "after 4 attempts" in str(error)
    assert TOKEN not in str(error) and TOKEN not in repr(error.args)
    assert error.__cause__ is None  # no chained exception carries request headers
    assert world.emu.request_count("POST") == 4 and len(sleeps) == 3
    assert world.emu.notes(world.mr) == []


def test_wrong_token_is_not_retried_and_not_echoed(world, sleeps):
    forge = make_forge(world.emu, sleeps, token="glpat-wrong-token-123")

    with pytest.raises(ForgeError) as info:
        forge.get_pull_request(world.repo, 7)

    assert info.value.status == 401 and not info.value.transient
    assert "glpat-wrong-token-123" not in str(info.value)
    assert world.emu.request_count() == 1 and sleeps == []


def test_bearer_token_is_accepted_too(world):
    client = gitlab.Gitlab(world.emu.url, oauth_token=TOKEN)
    client.auth()
    assert client.user.username == "sluice-bot"


# ---------------------------------------------------------------- setup


def test_self_managed_instance_under_a_relative_url(tmp_path, sleeps):
    with GitLabEmulator(token=TOKEN, url_prefix="/gitlab") as emu:
        alice = emu.add_user("alice")
        project = emu.add_project("ops/gitops", http_url=str(tmp_path))
        mr = emu.add_merge_request(
            project, source_branch="f", target_branch="main", sha=HEAD, base_sha=BASE, author=alice
        )
        for i in range(120):
            emu.add_note(mr, f"n{i}", author=alice)
        repo = RepoRef("gitlab", "ops/gitops", str(tmp_path))

        for url in (emu.url, emu.url + "/", emu.url + "/api/v4"):
            forge = GitLabForge(url=url, token=TOKEN, retrier=Retrier(sleep=sleeps.append))
            comments = forge.list_comments(forge.get_pull_request(repo, 1))
            assert [c.body for c in comments] == [f"n{i}" for i in range(120)]


@pytest.mark.parametrize(
    "url", ["gitlab.example.com", "ftp://gitlab", "https://u:p@gitlab.example.com", ""]
)
def test_bad_urls_are_rejected(url):
    with pytest.raises(ValueError):
        GitLabForge(url=url, token=TOKEN)


def test_normalize_url():
    assert (
        normalize_url(" https://git.example.com/gitlab/api/v4/ ")
        == "https://git.example.com/gitlab"
    )


def test_writes_are_paced(world):
    now = [0.0]
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        now[0] += seconds

    pacer = WritePacer(limit=2, window_s=60, clock=lambda: now[0], sleep=sleep)
    forge = make_forge(world.emu, [], write_pacer=pacer)
    pr = pr_of(forge, world)

    forge.create_comment(pr, "one")
    forge.create_comment(pr, "two")
    assert waited == []
    forge.create_comment(pr, "three")
    assert waited == [60.0]
    assert [n.body for n in world.emu.notes(world.mr)] == ["one", "two", "three"]


def test_keep_alive_requests_do_not_stall(forge, world):
    forge.bot_login()
    start = time.perf_counter()
    for _ in range(100):
        forge.get_pull_request(world.repo, 7)
    elapsed = time.perf_counter() - start
    # With Nagle + delayed ACK each request would stall ~40 ms (4 s in all).
    assert elapsed < 2.0, elapsed


# ---------------------------------------------------------------- webhooks


def test_merge_request_hook_payload(world):
    payload = world.emu.merge_request_hook(
        world.fork_mr, action="update", user=world.bob, oldrev=BASE, git_http_url="/tmp/x.git"
    )

    assert payload["object_kind"] == "merge_request"
    assert payload["user"]["username"] == "bob"
    project = payload["project"]
    assert (project["id"], project["path_with_namespace"], project["git_http_url"]) == (
        42,
        "acme/platform/gitops",
        "/tmp/x.git",
    )
    attrs = payload["object_attributes"]
    assert (attrs["iid"], attrs["action"], attrs["state"], attrs["oldrev"]) == (
        8, "update", "opened", BASE
    )  # fmt: skip
    assert attrs["draft"] is True and attrs["work_in_progress"] is True
    assert (attrs["source_project_id"], attrs["target_project_id"]) == (77, 42)
    assert attrs["last_commit"]["id"] == FORK_HEAD
    assert attrs["url"].endswith("/acme/platform/gitops/-/merge_requests/8")
    assert "oldrev" not in world.emu.merge_request_hook(world.mr)["object_attributes"]


def test_note_hook_payload(world):
    note = world.emu.add_note(world.mr, "/diff", author=world.carol)

    payload = world.emu.note_hook(world.mr, note)

    assert (payload["object_kind"], payload["user"]["username"]) == ("note", "carol")
    attrs = payload["object_attributes"]
    assert (attrs["id"], attrs["note"], attrs["noteable_type"], attrs["author_id"]) == (
        note.id, "/diff", "MergeRequest", world.carol.id
    )  # fmt: skip
    assert attrs["url"].endswith(f"/merge_requests/7#note_{note.id}")
    assert payload["merge_request"]["iid"] == 7
    assert payload["merge_request"]["last_commit"]["id"] == HEAD
    assert payload["project"]["git_http_url"] == world.repo.clone_url


def test_bad_arguments_are_rejected_before_any_request(forge, world):
    pr = pr_of(forge, world)
    before = world.emu.request_count()

    with pytest.raises(ValueError, match="unknown status state"):
        forge.set_status(world.repo, HEAD, "sluice/preview", "done", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported reaction"):
        forge.add_reaction(pr, 1, "party")
    with pytest.raises(ValueError, match="not GitLab"):
        forge.get_pull_request(RepoRef("github", "acme/gitops", "/x"), 1)
    with pytest.raises(ValueError, match="token is empty"):
        GitLabForge(url=world.emu.url, token="")
    assert world.emu.request_count() == before

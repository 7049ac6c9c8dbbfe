"""GitHubForge against the GitHub API emulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.forge.base import ForgeError, Permission, PullRequest, RepoRef
from bot.forge.github import GitHubForge
from bot.forge.retry import Retrier, WritePacer
from tests.emulators.github import ChangedFile, Fault, GitHubEmulator

REPO = "acme/deploy"
FORK = "mallory/deploy"
HEAD = "c0ffee" + "0" * 34
BASE = "ba5e00" + "0" * 34


class RecordingSleep:
    """A fake sleep: records requested delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def emulator() -> Iterator[GitHubEmulator]:
    with GitHubEmulator() as gh:
        gh.add_repo(REPO, clone_url="file:///srv/git/acme/deploy.git")
        gh.add_repo(FORK, fork_of=REPO, clone_url="file:///srv/git/mallory/deploy.git")
        gh.add_pull(
            REPO,
            number=1,
            title="Bump web to 1.2",
            author="alice",
            base_sha=BASE,
            head_sha=HEAD,
            head_ref="bump-web",
            files=["apps/web/values.yaml"],
        )
        gh.add_pull(REPO, number=2, author="mallory", head_repo=FORK, head_ref="evil", draft=True)
        yield gh


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


def make_forge(gh: GitHubEmulator, sleep: RecordingSleep, **kwargs: object) -> GitHubForge:
    options: dict[str, object] = {
        "base_url": gh.base_url,
        "token": gh.bot_token,
        "retrier": Retrier(attempts=4, sleep=sleep),
        "timeout_s": 2,
    }
    options.update(kwargs)
    return GitHubForge(**options)  # type: ignore[arg-type]


@pytest.fixture
def forge(emulator: GitHubEmulator, sleep: RecordingSleep) -> GitHubForge:
    return make_forge(emulator, sleep)


@pytest.fixture
def repo() -> RepoRef:
    return RepoRef(forge="github", full_name=REPO, clone_url="file:///srv/git/acme/deploy.git")


@pytest.fixture
def pr(forge: GitHubForge, repo: RepoRef) -> PullRequest:
    return forge.get_pull_request(repo, 1)


# -- each Forge method ---------------------------------------------------------------


def test_bot_login_is_the_token_owner_and_is_cached(
    forge: GitHubForge, emulator: GitHubEmulator
) -> None:
    assert forge.bot_login() == "sluice-bot"
    assert forge.bot_login() == "sluice-bot"
    assert len(emulator.requests_to("GET", r"^/user$")) == 1


def test_get_pull_request_reads_every_field(forge: GitHubForge, repo: RepoRef) -> None:
    pr = forge.get_pull_request(repo, 1)

    assert (pr.number, pr.title, pr.author) == (1, "Bump web to 1.2", "alice")
    assert (pr.base_ref, pr.base_sha, pr.head_ref, pr.head_sha) == ("main", BASE, "bump-web", HEAD)
    assert pr.state == "open" and not pr.draft and not pr.is_fork
    assert pr.head_clone_url == "file:///srv/git/acme/deploy.git"
    assert pr.url.endswith("/acme/deploy/pull/1")
    assert pr.merge_sha is None


def test_fork_pull_request_points_at_the_fork(forge: GitHubForge, repo: RepoRef) -> None:
    pr = forge.get_pull_request(repo, 2)

    assert pr.is_fork and pr.draft
    assert pr.head_clone_url == "file:///srv/git/mallory/deploy.git"
    assert pr.repo.full_name == REPO


def test_pull_request_whose_fork_was_deleted_still_counts_as_fork(
    forge: GitHubForge, emulator: GitHubEmulator, repo: RepoRef
) -> None:
    emulator.delete_head_repo(REPO, 2)

    pr = forge.get_pull_request(repo, 2)

    assert pr.is_fork and pr.head_clone_url is None


def test_merged_pull_request_carries_merge_sha(
    forge: GitHubForge, emulator: GitHubEmulator, repo: RepoRef
) -> None:
    emulator.add_pull(REPO, number=3, merged=True, merge_commit_sha="d" * 40)

    pr = forge.get_pull_request(repo, 3)

    assert pr.state == "merged" and pr.merge_sha == "d" * 40


def test_missing_pull_request_is_a_404_forge_error_not_retried(
    forge: GitHubForge, emulator: GitHubEmulator, repo: RepoRef, sleep: RecordingSleep
) -> None:
    with pytest.raises(ForgeError) as caught:
        forge.get_pull_request(repo, 99)

    assert caught.value.status == 404 and not caught.value.transient
    assert "acme/deploy#99" in str(caught.value)
    assert sleep.delays == []
    assert len(emulator.requests_to("GET", r"/pulls/99$")) == 1


def test_changed_files_reads_every_page_and_both_sides_of_renames(
    forge: GitHubForge, emulator: GitHubEmulator, repo: RepoRef
) -> None:
    files: list[str | ChangedFile] = [f"apps/a{i}/kustomization.yaml" for i in range(230)]
    files.append(ChangedFile("apps/new/x.yaml", "renamed", previous_filename="apps/old/x.yaml"))
    emulator.add_pull(REPO, number=4, files=files)
    pr = forge.get_pull_request(repo, 4)

    changed = forge.changed_files(pr)

    assert len(changed) == 232
    assert changed[0] == "apps/a0/kustomization.yaml"
    assert changed[-2:] == ["apps/old/x.yaml", "apps/new/x.yaml"]
    pages = emulator.requests_to("GET", r"/pulls/4/files$")
    assert [r.query.get("page", "1") for r in pages] == ["1", "2", "3"]


def test_changed_files_fails_closed_when_github_truncates_the_list(
    forge: GitHubForge, emulator: GitHubEmulator, repo: RepoRef
) -> None:
    emulator.add_pull(REPO, number=5, files=[f"f{i}.yaml" for i in range(3001)])
    pr = forge.get_pull_request(repo, 5)

    with pytest.raises(ForgeError, match="changes 3001 files; GitHub lists only 3000"):
        forge.changed_files(pr)


def test_list_comments_reads_every_page_oldest_first(
    forge: GitHubForge, emulator: GitHubEmulator, pr: PullRequest
) -> None:
    seeded = [emulator.add_comment(REPO, 1, f"comment {i}", author="bob") for i in range(205)]

    comments = forge.list_comments(pr)

    assert [c.id for c in comments] == seeded
    assert comments[0].body == "comment 0" and comments[-1].body == "comment 204"
    assert comments[0].author == "bob" and "#issuecomment-" in comments[0].url
    pages = emulator.requests_to("GET", r"/issues/1/comments$")
    assert len(pages) == 3
    # Every comment came from the listing; none was fetched one by one.
    assert emulator.requests_to("GET", r"/issues/comments/\d+$") == []


def test_create_and_edit_comment(
    forge: GitHubForge, emulator: GitHubEmulator, pr: PullRequest
) -> None:
    created = forge.create_comment(pr, "<!-- sluice:report -->\nfirst")
    edited = forge.edit_comment(pr, created.id, "<!-- sluice:report -->\nsecond")

    stored = emulator.comments(REPO, 1)
    assert [(c.id, c.author, c.body) for c in stored] == [
        (created.id, "sluice-bot", "<!-- sluice:report -->\nsecond")
    ]
    assert created.author == "sluice-bot" and edited.id == created.id
    assert edited.body.endswith("second")


def test_edit_of_unknown_comment_is_forge_error(forge: GitHubForge, pr: PullRequest) -> None:
    with pytest.raises(ForgeError) as caught:
        forge.edit_comment(pr, 123, "x")
    assert caught.value.status == 404


def test_set_status_truncates_description_and_skips_identical_repeat(
    forge: GitHubForge, emulator: GitHubEmulator, repo: RepoRef
) -> None:
    long = "policy: " + "deny " * 60
    forge.set_status(repo, HEAD, "sluice/policy", "failure", long, "http://ci/1")
    forge.set_status(repo, HEAD, "sluice/policy", "failure", long, "http://ci/1")

    statuses = emulator.statuses(REPO, HEAD)
    assert len(statuses) == 1
    assert statuses[0].state == "failure" and statuses[0].target_url == "http://ci/1"
    assert len(statuses[0].description or "") == 140
    assert statuses[0].description.endswith("…")  # type: ignore[union-attr]


def test_set_status_posts_each_change(
    forge: GitHubForge, emulator: GitHubEmulator, repo: RepoRef
) -> None:
    forge.set_status(repo, HEAD, "sluice/preview", "pending", "rendering")
    forge.set_status(repo, HEAD, "sluice/preview", "success", "3 apps changed")
    forge.set_status(repo, HEAD, "sluice/signatures", "success", "all signed")

    posted = [(s.context, s.state) for s in emulator.statuses(REPO, HEAD)]
    assert posted == [
        ("sluice/preview", "pending"),
        ("sluice/preview", "success"),
        ("sluice/signatures", "success"),
    ]


def test_add_reaction_is_idempotent(
    forge: GitHubForge, emulator: GitHubEmulator, pr: PullRequest
) -> None:
    comment_id = emulator.add_comment(REPO, 1, "/diff", author="bob")

    forge.add_reaction(pr, comment_id, "eyes")
    forge.add_reaction(pr, comment_id, "eyes")
    forge.add_reaction(pr, comment_id, "+1")

    reactions = emulator.reactions(comment_id)
    assert [(r.content, r.user) for r in reactions] == [
        ("eyes", "sluice-bot"),
        ("+1", "sluice-bot"),
    ]
    statuses = [r.status for r in emulator.requests_to("POST", r"/reactions$")]
    assert statuses == [201, 200, 201]


def test_add_reaction_rejects_unknown_content(forge: GitHubForge, pr: PullRequest) -> None:
    with pytest.raises(ValueError, match="no reaction 'thumbsup'"):
        forge.add_reaction(pr, 1, "thumbsup")


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("admin", Permission.ADMIN),
        ("maintain", Permission.MAINTAIN),
        ("write", Permission.WRITE),
        ("triage", Permission.TRIAGE),
        ("read", Permission.READ),
        ("security-auditor", Permission.READ),  # custom role: legacy permission "read"
    ],
)
def test_permission_uses_the_role_name(
    forge: GitHubForge, emulator: GitHubEmulator, repo: RepoRef, role: str, expected: Permission
) -> None:
    emulator.set_permission(REPO, "carol", role)

    assert forge.permission(repo, "carol") == expected


def test_permission_of_unknown_user_or_private_outsider_is_none(
    forge: GitHubForge, emulator: GitHubEmulator
) -> None:
    emulator.add_repo("acme/secret", private=True)
    emulator.set_permission("acme/secret", "sluice-bot", "write")
    emulator.add_user("dave")
    secret = RepoRef(forge="github", full_name="acme/secret", clone_url="")

    assert forge.permission(secret, "nobody-by-that-name") == Permission.NONE
    assert forge.permission(secret, "dave") == Permission.NONE


def test_is_member_counts_only_active_members(
    forge: GitHubForge, emulator: GitHubEmulator, repo: RepoRef
) -> None:
    emulator.add_team("acme", "platform", members={"erin": "maintainer"}, pending=["frank"])

    assert forge.is_member(repo, "acme/platform", "erin")
    assert not forge.is_member(repo, "acme/platform", "frank")
    assert not forge.is_member(repo, "acme/platform", "mallory")
    assert not forge.is_member(repo, "acme/no-such-team", "erin")
    with pytest.raises(ValueError, match="'org/team-slug'"):
        forge.is_member(repo, "platform", "erin")


def test_clone_auth_uses_the_token(forge: GitHubForge, emulator: GitHubEmulator) -> None:
    repo = RepoRef(forge="github", full_name=REPO, clone_url="")
    assert forge.clone_auth(repo) == ("x-access-token", emulator.bot_token)


# -- retries and failures ----------------------------------------------------------------


def test_5xx_is_retried_to_success(
    forge: GitHubForge, emulator: GitHubEmulator, pr: PullRequest, sleep: RecordingSleep
) -> None:
    emulator.inject(Fault.error(502), Fault.error(503), method="POST", path=r"/comments$")

    forge.create_comment(pr, "hello")

    assert [c.body for c in emulator.comments(REPO, 1)] == ["hello"]
    assert [r.status for r in emulator.requests_to("POST", r"/comments$")] == [502, 503, 201]
    assert len(sleep.delays) == 2 and all(0 < d <= 1 for d in sleep.delays)


def test_429_waits_as_long_as_retry_after_says(
    forge: GitHubForge, emulator: GitHubEmulator, pr: PullRequest, sleep: RecordingSleep
) -> None:
    emulator.inject(Fault.too_many(retry_after=17))

    assert forge.list_comments(pr) == []

    assert sleep.delays == [17.0]


def test_secondary_rate_limit_403_is_retried_after_retry_after(
    forge: GitHubForge, emulator: GitHubEmulator, pr: PullRequest, sleep: RecordingSleep
) -> None:
    emulator.inject(Fault.secondary_limit(retry_after=42), method="POST")

    forge.create_comment(pr, "after the limit")

    assert sleep.delays == [42.0]
    assert [r.status for r in emulator.requests_to("POST", r"/comments$")] == [403, 201]


def test_secondary_rate_limit_without_retry_after_waits_a_minute(
    forge: GitHubForge, emulator: GitHubEmulator, pr: PullRequest, sleep: RecordingSleep
) -> None:
    emulator.inject(Fault.secondary_limit(retry_after=None))

    forge.list_comments(pr)

    assert sleep.delays == [60.0]


def test_primary_rate_limit_waits_until_reset(
    forge: GitHubForge, emulator: GitHubEmulator, pr: PullRequest, sleep: RecordingSleep
) -> None:
    emulator.inject(Fault.primary_limit(reset_in=30))

    forge.list_comments(pr)

    assert len(sleep.delays) == 1 and 27 <= sleep.delays[0] <= 31


def test_wait_beyond_the_retrier_limit_fails_fast(
    emulator: GitHubEmulator, pr: PullRequest, sleep: RecordingSleep
) -> None:
    forge = make_forge(emulator, sleep, retrier=Retrier(max_wait_s=60, sleep=sleep))
    emulator.inject(Fault.too_many(retry_after=3600))

    with pytest.raises(ForgeError, match="asked to wait 3600s") as caught:
        forge.list_comments(pr)
    assert caught.value.transient and caught.value.status == 429
    assert sleep.delays == []


def test_dropped_connection_is_retried(
    forge: GitHubForge, emulator: GitHubEmulator, pr: PullRequest, sleep: RecordingSleep
) -> None:
    forge.list_comments(pr)  # a kept-alive connection that the drop then breaks
    emulator.inject(Fault.drop(), method="POST")

    forge.create_comment(pr, "survived")

    assert [c.body for c in emulator.comments(REPO, 1)] == ["survived"]
    assert len(sleep.delays) == 1


def test_timeout_is_retried(
    emulator: GitHubEmulator, pr: PullRequest, sleep: RecordingSleep
) -> None:
    forge = make_forge(emulator, sleep, timeout_s=0.5)
    emulator.inject(Fault.stall(3.0), path=r"/pulls/1$")

    started = time.monotonic()
    pr = forge.get_pull_request(pr.repo, 1)

    assert pr.number == 1
    assert time.monotonic() - started < 2.5
    assert len(sleep.delays) == 1


def test_persistent_5xx_gives_up_without_leaking_the_token(
    emulator: GitHubEmulator, pr: PullRequest, sleep: RecordingSleep
) -> None:
    forge = make_forge(emulator, sleep)
    emulator.fail_randomly(1.0, Fault.error(500))

    with pytest.raises(ForgeError) as caught:
        forge.create_comment(pr, "never")

    error = caught.value
    assert error.status == 500 and error.transient
    assert "failed after 4 attempts" in str(error)
    assert emulator.bot_token not in str(error) and emulator.bot_token not in repr(error)
    assert emulator.bot_token not in str(error.__context__)
    assert len(emulator.requests_to("POST", r"/comments$")) == 4
    assert emulator.comments(REPO, 1) == []


def test_wrong_token_is_a_forge_error_and_not_retried(
    emulator: GitHubEmulator, repo: RepoRef, sleep: RecordingSleep
) -> None:
    wrong = "ghp_" + "x" * 36
    forge = make_forge(emulator, sleep, token=wrong)

    with pytest.raises(ForgeError) as caught:
        forge.get_pull_request(repo, 1)

    assert caught.value.status == 401 and not caught.value.transient
    assert "Bad credentials" in str(caught.value)
    assert wrong not in str(caught.value)
    assert sleep.delays == []
    assert len(emulator.requests) == 1


def test_random_faults_are_absorbed(
    emulator: GitHubEmulator, pr: PullRequest, sleep: RecordingSleep
) -> None:
    forge = make_forge(emulator, sleep, retrier=Retrier(attempts=8, sleep=sleep))
    emulator.fail_randomly(0.3, Fault.error(502), Fault.too_many(0), Fault.drop(), seed=7)

    for i in range(10):
        forge.create_comment(pr, f"c{i}")

    assert [c.body for c in emulator.comments(REPO, 1)] == [f"c{i}" for i in range(10)]
    assert any(r.status != 201 for r in emulator.requests_to("POST", r"/comments$"))


# -- pacing -------------------------------------------------------------------------------


def test_writes_are_paced_and_reads_are_not(
    emulator: GitHubEmulator, pr: PullRequest, sleep: RecordingSleep
) -> None:
    clock = FakeClock()
    pacer = WritePacer(limit=3, window_s=60, clock=clock, sleep=clock.sleep)
    forge = make_forge(emulator, sleep, write_pacer=pacer)

    for _ in range(5):
        forge.list_comments(pr)
    assert clock.slept == []

    for i in range(4):
        forge.create_comment(pr, f"c{i}")

    assert len(emulator.comments(REPO, 1)) == 4
    # The 4th write had to wait for the first to leave the 60 s window.
    assert sum(clock.slept) == pytest.approx(60)


def test_default_pacing_is_fast_and_the_timing_is_reported(
    forge: GitHubForge, emulator: GitHubEmulator, pr: PullRequest
) -> None:
    started = time.perf_counter()
    for i in range(50):
        forge.create_comment(pr, f"c{i}")
    elapsed = time.perf_counter() - started

    print(f"\n50 create_comment calls: {elapsed * 1000:.0f} ms ({elapsed * 20:.1f} ms each)")
    assert len(emulator.comments(REPO, 1)) == 50
    # PyGithub's default pacing alone would take 50 s.
    assert elapsed < 10


# -- GitHub Enterprise and App auth --------------------------------------------------------


def test_enterprise_base_path(sleep: RecordingSleep) -> None:
    with GitHubEmulator(base_path="/api/v3") as gh:
        gh.add_repo(REPO)
        gh.add_pull(REPO, number=1)
        for i in range(120):
            gh.add_comment(REPO, 1, f"c{i}")
        forge = make_forge(gh, sleep)
        repo = RepoRef(forge="github", full_name=REPO, clone_url="")

        pr = forge.get_pull_request(repo, 1)
        comments = forge.list_comments(pr)
        forge.set_status(repo, pr.head_sha, "sluice/preview", "success", "ok")
        login = forge.bot_login()

    assert gh.base_url.endswith("/api/v3")
    assert len(comments) == 120
    assert login == "sluice-bot"
    assert all(r.status in (200, 201) for r in gh.requests)
    assert len(gh.requests_to("GET", r"/issues/1/comments$")) == 2


def test_enterprise_prefix_is_required(sleep: RecordingSleep) -> None:
    with GitHubEmulator(base_path="/api/v3") as gh:
        gh.add_repo(REPO)
        forge = make_forge(gh, sleep, base_url=gh.web_url)

        with pytest.raises(ForgeError) as caught:
            forge.bot_login()

    assert caught.value.status == 404


def _rsa_key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def app_key() -> tuple[str, str]:
    return _rsa_key_pair()


def test_github_app_installation_auth(
    emulator: GitHubEmulator,
    repo: RepoRef,
    sleep: RecordingSleep,
    app_key: tuple[str, str],
) -> None:
    private, public = app_key
    emulator.add_app(4242, slug="sluice", public_key_pem=public, installations={77: [REPO]})
    forge = make_forge(
        emulator, sleep, token=None, app_id=4242, private_key=private, installation_id=77
    )

    assert forge.bot_login() == "sluice[bot]"
    pr = forge.get_pull_request(repo, 1)
    comment = forge.create_comment(pr, "from the app")
    user, token = forge.clone_auth(repo)

    assert comment.author == "sluice[bot]"
    assert emulator.comments(REPO, 1)[0].author == "sluice[bot]"
    assert user == "x-access-token" and token.startswith("ghs_")
    # One installation token served every call.
    assert len(emulator.requests_to("POST", r"^/app/installations/77/access_tokens$")) == 1
    # The token really is the installation's: it reads the repository as the app.
    as_token = make_forge(emulator, sleep, token=token)
    assert as_token.get_pull_request(repo, 1).head_sha == HEAD


def test_github_app_finds_the_installation_per_repository(
    emulator: GitHubEmulator, sleep: RecordingSleep, app_key: tuple[str, str]
) -> None:
    private, public = app_key
    emulator.add_repo("other/infra")
    emulator.add_pull("other/infra", number=5)
    emulator.add_app(
        4242, slug="sluice", public_key_pem=public, installations={77: [REPO], 78: ["other/infra"]}
    )
    forge = make_forge(emulator, sleep, token=None, app_id=4242, private_key=private)
    acme = RepoRef(forge="github", full_name=REPO, clone_url="")
    other = RepoRef(forge="github", full_name="other/infra", clone_url="")

    forge.create_comment(forge.get_pull_request(acme, 1), "a")
    forge.create_comment(forge.get_pull_request(other, 5), "b")
    forge.create_comment(forge.get_pull_request(other, 5), "c")

    assert [c.body for c in emulator.comments("other/infra", 5)] == ["b", "c"]
    assert len(emulator.requests_to("GET", r"^/repos/other/infra/installation$")) == 1
    assert len(emulator.requests_to("POST", r"/access_tokens$")) == 2


def test_github_app_with_the_wrong_key_fails_without_leaking_it(
    emulator: GitHubEmulator, repo: RepoRef, sleep: RecordingSleep, app_key: tuple[str, str]
) -> None:
    _, public = app_key
    other_private, _ = _rsa_key_pair()
    emulator.add_app(4242, slug="sluice", public_key_pem=public, installations={77: [REPO]})
    forge = make_forge(
        emulator, sleep, token=None, app_id=4242, private_key=other_private, installation_id=77
    )

    with pytest.raises(ForgeError) as caught:
        forge.get_pull_request(repo, 1)

    assert caught.value.status == 401
    assert "PRIVATE KEY" not in str(caught.value)
    assert sleep.delays == []


def test_constructor_rejects_ambiguous_or_missing_credentials() -> None:
    with pytest.raises(ValueError, match="either a token or a GitHub App"):
        GitHubForge(base_url="http://x", token="t", app_id=1, private_key="k")
    with pytest.raises(ValueError, match="needs a token"):
        GitHubForge(base_url="http://x")
    with pytest.raises(ValueError, match="needs a token"):
        GitHubForge(base_url="http://x", app_id=1)
    with pytest.raises(ValueError, match="not an unencrypted PEM private key") as caught:
        GitHubForge(base_url="http://x", app_id=1, private_key="-----BEGIN junk SECRET-----")
    assert "SECRET" not in str(caught.value)
    with pytest.raises(ValueError, match="only with a GitHub App"):
        GitHubForge(base_url="http://x", token="t", installation_id=3)


# -- webhook payload helpers ------------------------------------------------------------------


def test_webhook_payloads_reflect_emulator_state(emulator: GitHubEmulator) -> None:
    event = emulator.pull_request_event(REPO, 2, action="synchronize", installation_id=77)

    pull = event["pull_request"]
    assert (event["action"], event["number"], event["installation"]["id"]) == ("synchronize", 2, 77)
    assert pull["draft"] is True and pull["state"] == "open" and pull["merged"] is False
    assert pull["head"]["repo"]["full_name"] == FORK and pull["head"]["repo"]["fork"] is True
    assert pull["head"]["repo"]["clone_url"] == "file:///srv/git/mallory/deploy.git"
    assert pull["base"]["repo"]["full_name"] == REPO
    assert event["repository"]["clone_url"] == "file:///srv/git/acme/deploy.git"
    assert event["sender"]["login"] == "mallory"

    comment_id = emulator.add_comment(REPO, 1, "/sync web-prod", author="bob")
    event = emulator.issue_comment_event(REPO, comment_id)
    assert event["issue"]["number"] == 1 and event["issue"]["pull_request"]["url"].endswith(
        "/repos/acme/deploy/pulls/1"
    )
    assert event["comment"]["id"] == comment_id and event["comment"]["body"] == "/sync web-prod"
    assert event["comment"]["user"]["login"] == "bob" and event["sender"]["login"] == "bob"

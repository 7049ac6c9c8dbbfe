"""bot.deploy.ledger against real git, real gpg and real ssh-keygen signatures."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.deploy.ledger import (
    BotSigner,
    Ledger,
    LedgerEntry,
    LedgerError,
    SigningConfig,
    verify_tip,
)
from bot.gitops import Git
from bot.signatures import TrustedKeys
from tests import gpgkit
from tests.gpgkit import commit, git

BRANCH = "sluice/ledger"


@dataclass
class Keys:
    home: Path
    bot_fpr: str
    mallory_fpr: str
    bot_ssh: gpgkit.SshKey
    intruder_ssh: gpgkit.SshKey
    trusted: TrustedKeys

    def signer(self, who: str) -> BotSigner:
        configs = {
            "gpg": SigningConfig("gpg", self.bot_fpr, gnupg_home=self.home),
            "ssh": SigningConfig("ssh", str(self.bot_ssh.private)),
            "mallory": SigningConfig("gpg", self.mallory_fpr, gnupg_home=self.home),
            "intruder": SigningConfig("ssh", str(self.intruder_ssh.private)),
        }
        return BotSigner(configs[who])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("ledger-keys")
    home = gpgkit.new_gnupghome(tmp / "gnupg")
    bot_fpr = gpgkit.make_gpg_key(home, "Sluice Bot <bot@sluice.invalid>")
    mallory_fpr = gpgkit.make_gpg_key(home, "Mallory <mallory@example.com>")
    bot_ssh = gpgkit.make_ssh_key(tmp / "ssh", "bot")
    intruder_ssh = gpgkit.make_ssh_key(tmp / "ssh", "intruder")
    trusted_dir = tmp / "bot-keys"
    trusted_dir.mkdir()
    (trusted_dir / "bot.asc").write_text(gpgkit.export_public(home, bot_fpr))
    (trusted_dir / "allowed_signers").write_text(
        gpgkit.allowed_signers_line("bot@sluice.invalid", bot_ssh)
    )
    yield Keys(home, bot_fpr, mallory_fpr, bot_ssh, intruder_ssh, TrustedKeys.load(trusted_dir))
    gpgkit.kill_agent(home)


@dataclass
class Repo:
    path: Path
    main: list[str]  # commits on main, oldest first
    feature: str  # a commit not on main

    @property
    def git(self) -> Git:
        return Git(self.path)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    path = gpgkit.init_repo(tmp_path / "gitops")
    main = [commit(path, f"main {i}", files={"apps/web/app.yaml": f"v: {i}\n"}) for i in range(3)]
    git(path, "checkout", "-q", "-b", "feature")
    feature = commit(path, "unmerged", files={"apps/web/app.yaml": "v: evil\n"})
    git(path, "checkout", "-q", "main")
    return Repo(path, main, feature)


def entry(app: str, revision: str, **kw) -> LedgerEntry:
    defaults = {
        "action": "deploy",
        "pr": 7,
        "pr_url": "https://github.com/org/gitops/pull/7",
        "approved_by": ["alice"],
        "gates": {"signatures": "pass", "policy": "pass", "render": "pass"},
        "at": "2026-01-31T12:00:00Z",
    }
    return LedgerEntry(app=app, revision=revision, **{**defaults, **kw})


def log(path: Path, ref: str = BRANCH) -> list[str]:
    return git(path, "rev-list", ref).split()


# --- recording and reading


def test_first_record_creates_an_orphan_branch_with_the_entry(repo, keys):
    ledger = Ledger(repo.git)
    assert ledger.tip() is None
    assert ledger.read("web") is None

    sha = ledger.record([entry("web", repo.main[0])], keys.signer("gpg"), "deploy web")

    assert ledger.tip() == sha
    assert git(repo.path, "log", "-1", "--format=%P", sha) == ""  # a root commit
    assert git(repo.path, "ls-tree", "-r", "--name-only", sha) == "apps/web.yaml"
    assert git(repo.path, "log", "-1", "--format=%B", sha) == "deploy web"
    assert git(repo.path, "log", "-1", "--format=%an <%ae>", sha) == "Sluice <sluice@localhost>"
    got = ledger.read("web")
    assert got == entry("web", repo.main[0])
    assert git(repo.path, "rev-parse", "main") == repo.main[-1]  # tracked branch untouched


def test_one_commit_per_record_and_history_newest_first(repo, keys):
    ledger = Ledger(repo.git)
    signer = keys.signer("ssh")
    first = ledger.record([entry("web", repo.main[0])], signer, "deploy web #7")
    second = ledger.record(
        [entry("web", repo.main[1], pr=8), entry("api", repo.main[1], pr=8)],
        signer,
        "deploy web, api #8",
    )
    third = ledger.record(
        [entry("web", repo.main[0], action="rollback", actor="alice")], signer, "rollback web"
    )

    assert log(repo.path) == [third, second, first]
    assert git(repo.path, "diff-tree", "--no-commit-id", "--name-only", "-r", second).split() == [
        "apps/api.yaml",
        "apps/web.yaml",
    ]
    history = ledger.history("web")
    assert [sha for sha, _ in history] == [third, second, first]
    assert [(e.revision, e.action, e.pr) for _, e in history] == [
        (repo.main[0], "rollback", 7),
        (repo.main[1], "deploy", 8),
        (repo.main[0], "deploy", 7),
    ]
    # ``previous`` is what the ledger named before, whatever the caller passed.
    assert [e.previous for _, e in history] == [repo.main[1], repo.main[0], None]
    assert [sha for sha, _ in ledger.history("api")] == [second]
    assert len(ledger.history("web", limit=2)) == 2
    assert ledger.read("api", at=first) is None
    assert ledger.read("web").actor == "alice"


def test_record_touches_no_working_tree_index_or_head(repo, keys):
    (repo.path / "dirty.txt").write_text("uncommitted\n")
    (repo.path / "apps/web/app.yaml").write_text("v: staged\n")
    git(repo.path, "add", "apps/web/app.yaml")
    index = repo.path / ".git" / "index"
    before = (
        git(repo.path, "status", "--porcelain"),
        hashlib.sha256(index.read_bytes()).hexdigest(),
        git(repo.path, "symbolic-ref", "HEAD"),
        git(repo.path, "rev-parse", "HEAD"),
    )

    Ledger(repo.git).record([entry("web", repo.main[2])], keys.signer("gpg"), "deploy")

    after = (
        git(repo.path, "status", "--porcelain"),
        hashlib.sha256(index.read_bytes()).hexdigest(),
        git(repo.path, "symbolic-ref", "HEAD"),
        git(repo.path, "rev-parse", "HEAD"),
    )
    assert after == before
    assert not (repo.path / "apps/web.yaml").exists()


def test_record_works_in_a_bare_mirror(repo, keys, tmp_path):
    bare = tmp_path / "mirror.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True)
    ledger = Ledger(Git(bare))
    sha = ledger.record([entry("web", repo.main[1])], keys.signer("ssh"), "deploy")
    assert ledger.read("web").revision == repo.main[1]
    assert verify_tip(Git(bare), keys.trusted).tip == sha


def test_concurrent_writers_lose_no_entry(repo, keys):
    ledger = Ledger(repo.git)
    signer = keys.signer("ssh")
    errors: list[BaseException] = []

    def writer(app: str) -> None:
        try:
            for i in range(6):
                ledger.record([entry(app, repo.main[i % 3], pr=i + 1)], signer, f"{app} {i}")
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(app,)) for app in ("web", "api")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert len(log(repo.path)) == 12
    for app in ("web", "api"):
        assert [e.pr for _, e in Ledger(repo.git).history(app, limit=50)] == [6, 5, 4, 3, 2, 1]
    # One linear chain: every commit but the root has exactly one parent.
    lines = git(repo.path, "rev-list", "--parents", BRANCH).splitlines()
    assert [len(line.split()) - 1 for line in lines] == [1] * 11 + [0]


def test_failed_signing_leaves_the_ledger_as_it_was(repo, keys, tmp_path):
    ledger = Ledger(repo.git)
    tip = ledger.record([entry("web", repo.main[0])], keys.signer("gpg"), "deploy")
    empty_home = gpgkit.new_gnupghome(tmp_path / "empty-gnupg")
    signer = BotSigner(SigningConfig("gpg", keys.bot_fpr, gnupg_home=empty_home))
    with pytest.raises(LedgerError, match=r"cannot sign the ledger commit \(gpg\)"):
        ledger.record([entry("web", repo.main[1])], signer, "deploy")
    assert ledger.tip() == tip
    gpgkit.kill_agent(empty_home)


def test_record_rejects_bad_batches(repo, keys):
    ledger = Ledger(repo.git)
    signer = keys.signer("ssh")
    with pytest.raises(LedgerError, match="at least one entry"):
        ledger.record([], signer, "nothing")
    with pytest.raises(LedgerError, match="one entry per app"):
        ledger.record([entry("web", repo.main[0]), entry("web", repo.main[1])], signer, "x")
    with pytest.raises(LedgerError, match="needs a message"):
        ledger.record([entry("web", repo.main[0])], signer, "  ")
    assert ledger.tip() is None
    with pytest.raises(LedgerError, match="not a valid ledger branch"):
        Ledger(repo.git, "../escape")


# --- the entry format


def test_entry_yaml_round_trip():
    original = entry("web-prod", "a" * 40, previous="b" * 40, pr=None, pr_url=None)
    text = original.to_yaml()
    assert text.splitlines()[0] == "app: web-prod"
    assert LedgerEntry.from_yaml(text) == original
    assert LedgerEntry.from_yaml(text.encode()).to_dict() == original.to_dict()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("- a\n", "must be a mapping"),
        ("app: [unclosed\n", r"not valid YAML \(line"),
        ("app: web\nrevision: {r}\naction: deploy\nat: '2026-01-01T00:00:00Z'\nextra: 1\n",
         "unknown keys: extra"),
        ("app: web\nrevision: {r}\naction: deploy\n", "missing keys: at"),
        ("app: web\nrevision: abc\naction: deploy\nat: '2026-01-01T00:00:00Z'\n",
         "revision: must be a full lowercase commit SHA"),
        ("app: web\nrevision: {r}\naction: promote\nat: '2026-01-01T00:00:00Z'\n",
         "action: must be one of deploy, rollback, preview-deploy"),
        ("app: web\nrevision: {r}\naction: deploy\npr: true\nat: '2026-01-01T00:00:00Z'\n",
         "pr: must be a positive integer"),
        ("app: web\nrevision: {r}\naction: deploy\nat: '2026-01-01T02:00:00+02:00'\n",
         "must be in UTC"),
        ("app: web\nrevision: {r}\naction: deploy\nat: 2026-01-01T00:00:00Z\n",
         "at: must be a quoted ISO-8601 string"),
        ("app: web\nrevision: {r}\naction: deploy\nat: 'yesterday'\n", "is not an ISO-8601 time"),
        ("app: ../etc\nrevision: {r}\naction: deploy\nat: '2026-01-01T00:00:00Z'\n",
         "app: must be a lowercase DNS-style app name"),
        ("app: web\nrevision: {r}\naction: deploy\napproved_by: [alice, '']\n"
         "at: '2026-01-01T00:00:00Z'\n", "approved_by: must be a list of user names"),
    ],
)  # fmt: skip
def test_entry_yaml_is_validated_strictly(text, error):
    with pytest.raises(LedgerError, match=error) as info:
        LedgerEntry.from_yaml(text.replace("{r}", "c" * 40), "apps/web.yaml")
    assert str(info.value).startswith("apps/web.yaml")


def test_entry_file_naming_another_app_is_refused(repo, keys):
    ledger = Ledger(repo.git)
    ledger.record([entry("web", repo.main[0])], keys.signer("ssh"), "deploy")
    blob = git(
        repo.path, "hash-object", "-w", "--stdin", input=entry("api", "d" * 40).to_yaml().encode()
    )
    tree = git(repo.path, "mktree", input=f"100644 blob {blob}\tweb.yaml\n".encode())
    root = git(repo.path, "mktree", input=f"040000 tree {tree}\tapps\n".encode())
    forged = git(repo.path, "commit-tree", root, "-p", ledger.tip(), "-m", "x")
    git(repo.path, "update-ref", f"refs/heads/{BRANCH}", forged)
    with pytest.raises(LedgerError, match="apps/web.yaml at ledger commit .* names app 'api'"):
        ledger.read("web")


def test_signing_config_errors_are_specific(tmp_path, keys):
    with pytest.raises(LedgerError, match="not a readable file"):
        BotSigner(SigningConfig("ssh", str(tmp_path / "missing")))
    with pytest.raises(LedgerError, match="full key fingerprint"):
        SigningConfig("gpg", "bot@sluice.invalid", gnupg_home=tmp_path)
    with pytest.raises(LedgerError, match="needs gnupg_home"):
        SigningConfig("gpg", keys.bot_fpr)
    with pytest.raises(LedgerError, match="signing method 'x509'"):
        SigningConfig("x509", "k")  # type: ignore[arg-type]
    assert SigningConfig.from_env({}) is None
    config = SigningConfig.from_env(
        {"SLUICE_SIGNING_METHOD": "ssh", "SLUICE_SIGNING_KEY": str(keys.bot_ssh.private)}
    )
    assert config == SigningConfig("ssh", str(keys.bot_ssh.private))
    assert str(keys.bot_ssh.private) not in repr(config)
    with pytest.raises(LedgerError, match="SLUICE_SIGNING_KEY is not"):
        SigningConfig.from_env({"SLUICE_SIGNING_METHOD": "gpg"})


# --- verification (the puller's side)


@pytest.mark.parametrize(("method", "signer"), [("gpg", "Sluice Bot"), ("ssh", "bot@sluice")])
def test_signed_tip_verifies_and_names_an_approved_revision(repo, keys, method, signer):
    ledger = Ledger(repo.git)
    ledger.record([entry("web", repo.main[1])], keys.signer(method), "deploy web")
    ledger.record([entry("api", repo.main[2])], keys.signer(method), "deploy api")

    verified = verify_tip(repo.git, keys.trusted)

    assert verified.tip == ledger.tip()
    assert (verified.check.status, verified.check.method) == ("valid", method)
    assert verified.check.signer.startswith(signer)
    assert verified.approved_revision("web", "main").revision == repo.main[1]
    assert verified.approved_revision("api", "refs/heads/main").revision == repo.main[2]


def test_unsigned_tip_is_refused(repo, keys):
    ledger = Ledger(repo.git)
    tip = ledger.record([entry("web", repo.main[1])], keys.signer("gpg"), "deploy")
    tree = git(repo.path, "rev-parse", f"{tip}^{{tree}}")
    unsigned = git(repo.path, "commit-tree", tree, "-p", tip, "-m", "sneaky")
    git(repo.path, "update-ref", f"refs/heads/{BRANCH}", unsigned)
    with pytest.raises(LedgerError, match=r"ledger tip of sluice/ledger \(\w{12}\) is unsigned"):
        verify_tip(repo.git, keys.trusted)


@pytest.mark.parametrize("who", ["mallory", "intruder"])
def test_tip_signed_by_an_untrusted_key_is_refused(repo, keys, who):
    Ledger(repo.git).record([entry("web", repo.main[1])], keys.signer(who), "deploy")
    with pytest.raises(LedgerError, match="is untrusted, not signed by a trusted bot key"):
        verify_tip(repo.git, keys.trusted)


@pytest.mark.parametrize("method", ["gpg", "ssh"])
def test_tampered_tip_is_refused(repo, keys, method):
    ledger = Ledger(repo.git)
    tip = ledger.record([entry("web", repo.main[1])], keys.signer(method), "deploy")
    # Swap the signed tree for one that approves the unmerged commit; keep the signature.
    blob = git(
        repo.path,
        "hash-object",
        "-w",
        "--stdin",
        input=entry("web", repo.feature).to_yaml().encode(),
    )
    apps = git(repo.path, "mktree", input=f"100644 blob {blob}\tweb.yaml\n".encode())
    evil = git(repo.path, "mktree", input=f"040000 tree {apps}\tapps\n".encode())
    tree = git(repo.path, "rev-parse", f"{tip}^{{tree}}")
    gpgkit.forge_commit(repo.path, tip, f"tree {tree}".encode(), f"tree {evil}".encode(), BRANCH)
    assert ledger.read("web").revision == repo.feature
    with pytest.raises(LedgerError, match="is invalid, not signed by a trusted bot key"):
        verify_tip(repo.git, keys.trusted)


def test_signed_tip_over_a_forged_entry_does_not_approve_it(repo, keys):
    ledger = Ledger(repo.git)
    signer = keys.signer("ssh")
    base = ledger.record([entry("web", repo.main[0])], signer, "deploy web")
    # Someone with push access slips in an unsigned commit changing web's entry ...
    blob = git(
        repo.path,
        "hash-object",
        "-w",
        "--stdin",
        input=entry("web", repo.main[2]).to_yaml().encode(),
    )
    apps = git(repo.path, "mktree", input=f"100644 blob {blob}\tweb.yaml\n".encode())
    root = git(repo.path, "mktree", input=f"040000 tree {apps}\tapps\n".encode())
    forged = git(repo.path, "commit-tree", root, "-p", base, "-m", "innocent")
    git(repo.path, "update-ref", f"refs/heads/{BRANCH}", forged)
    # ... and the bot later records another app on top, signing the whole tree.
    ledger.record([entry("api", repo.main[1])], signer, "deploy api")

    verified = verify_tip(repo.git, keys.trusted)
    assert verified.approved_revision("api", "main").revision == repo.main[1]
    with pytest.raises(LedgerError, match=r"ledger entry for 'web' \(\w{12}\) is unsigned"):
        verified.approved_revision("web", "main")


def test_revision_not_on_the_tracked_branch_is_refused(repo, keys):
    ledger = Ledger(repo.git)
    ledger.record([entry("web", repo.feature)], keys.signer("gpg"), "deploy")
    verified = verify_tip(repo.git, keys.trusted)
    with pytest.raises(LedgerError, match=r"revision \w{12} is not reachable from main"):
        verified.approved_revision("web", "main")
    assert verified.approved_revision("web", "feature").revision == repo.feature
    with pytest.raises(LedgerError, match="no entry for app 'api'"):
        verified.approved_revision("api", "main")
    with pytest.raises(LedgerError, match="tracked branch: unknown revision 'nope'"):
        verified.approved_revision("web", "nope")


def test_revision_missing_from_the_repository_is_refused(repo, keys):
    Ledger(repo.git).record([entry("web", "e" * 40)], keys.signer("ssh"), "deploy")
    with pytest.raises(LedgerError, match="eeeeeeeeeeee is not in the repository"):
        verify_tip(repo.git, keys.trusted).approved_revision("web", "main")


def test_preview_deploy_needs_explicit_permission(repo, keys):
    Ledger(repo.git).record(
        [entry("web", repo.feature, action="preview-deploy")], keys.signer("ssh"), "preview"
    )
    verified = verify_tip(repo.git, keys.trusted)
    with pytest.raises(LedgerError, match="preview-deploy, which this app does not allow"):
        verified.approved_revision("web", "feature")
    got = verified.approved_revision("web", "feature", allow_preview_deploy=True)
    assert got.action == "preview-deploy"


def test_rewound_ledger_is_refused(repo, keys):
    ledger = Ledger(repo.git)
    old = ledger.record([entry("web", repo.main[0])], keys.signer("gpg"), "deploy 1")
    new = ledger.record([entry("web", repo.main[2])], keys.signer("gpg"), "deploy 2")
    assert verify_tip(repo.git, keys.trusted, not_before=new).tip == new
    assert verify_tip(repo.git, keys.trusted, not_before=old).tip == new
    git(repo.path, "update-ref", f"refs/heads/{BRANCH}", old)  # a signed, but older, tip
    with pytest.raises(LedgerError, match="does not descend from .*rewound"):
        verify_tip(repo.git, keys.trusted, not_before=new)


def test_missing_ledger_branch_is_refused(repo, keys):
    with pytest.raises(LedgerError, match="ledger branch sluice/ledger does not exist"):
        verify_tip(repo.git, keys.trusted)


# --- pushing


def _clone(source: Path, dest: Path) -> Git:
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(dest)], check=True)
    return Git(dest)


def test_push_to_a_bare_remote(repo, keys, tmp_path):
    remote = _clone(repo.path, tmp_path / "remote.git")
    ledger = Ledger(repo.git)
    ledger.record([entry("web", repo.main[1])], keys.signer("gpg"), "deploy")
    ledger.push(str(remote.path), ("x-access-token", "tok-123"))
    assert Ledger(remote).tip() == ledger.tip()
    assert (
        verify_tip(remote, keys.trusted).approved_revision("web", "main").revision == (repo.main[1])
    )
    ledger.push(str(remote.path))  # nothing new: still fine


def test_push_after_the_remote_moved_re_records_ours_on_top(repo, keys, tmp_path):
    remote = _clone(repo.path, tmp_path / "remote.git")
    other = Ledger(_clone(repo.path, tmp_path / "other.git"))
    ours = Ledger(repo.git)
    signer = keys.signer("ssh")
    # Both start from nothing; the other replica pushes first.
    theirs_sha = other.record([entry("web", repo.main[1], pr=1)], signer, "deploy web #1")
    other.push(str(remote.path))
    ours.record([entry("web", repo.main[2], pr=2)], signer, "deploy web #2")
    ours.record([entry("api", repo.main[2], pr=2)], signer, "deploy api #2")

    with pytest.raises(LedgerError, match="a signer is needed"):
        ours.push(str(remote.path))
    ours.push(str(remote.path), signer=signer)

    remote_ledger = Ledger(remote)
    assert remote_ledger.tip() == ours.tip()
    assert log(remote.path) == log(repo.path)
    assert log(remote.path)[-1] == theirs_sha  # theirs kept, at the bottom
    assert [git(remote.path, "log", "-1", "--format=%s", s) for s in log(remote.path)] == [
        "deploy api #2",
        "deploy web #2",
        "deploy web #1",
    ]
    history = remote_ledger.history("web")
    assert [e.pr for _, e in history] == [2, 1]
    assert history[0][1].previous == repo.main[1]  # re-recorded against the remote's state
    assert remote_ledger.read("api").revision == repo.main[2]
    verify_tip(remote, keys.trusted).approved_revision("web", "main")


def test_push_failure_names_no_credentials(repo, keys, tmp_path):
    ledger = Ledger(repo.git)
    ledger.record([entry("web", repo.main[1])], keys.signer("ssh"), "deploy")
    with pytest.raises(LedgerError, match="git push failed") as info:
        ledger.push("http://bot:s3cr3t-in-url@127.0.0.1:9/repo.git", ("bot", "s3cr3t-token"))
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(LedgerError, match="git push failed"):
        ledger.push(str(tmp_path / "no-such-remote.git"))
    with pytest.raises(LedgerError, match="nothing to push"):
        Ledger(repo.git, "other/ledger").push(str(tmp_path))

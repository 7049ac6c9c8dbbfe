"""The deploy branch against a real bare repository: where it may move, and where not."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from bot.config.repo import ConfigError
from bot.config.server import load_repo_settings
from bot.config.signing import SigningConfig
from bot.deploy.deploy_branch import DeployBranch, DeployBranchError
from bot.deploy.ledger import BotSigner, Ledger, LedgerEntry, LedgerError
from bot.gitops import Git

BRANCH = "sluice/approved"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(work: Path, name: str) -> str:
    (work / name).write_text(name)
    git(work, "add", name)
    git(work, "-c", "commit.gpgsign=false", "commit", "-q", "-m", name)
    return git(work, "rev-parse", "HEAD")


@pytest.fixture
def setup(tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    first, second = commit(work, "a"), commit(work, "b")
    git(work, "checkout", "-q", "-b", "side", first)
    side = commit(work, "evil")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    mirror = Git(bare)  # the bot's mirror: here the remote itself, holding main and side
    branch = DeployBranch(mirror, str(bare), None, BRANCH, "main")
    return bare, branch, first, second, side


def tip(bare: Path) -> str:
    return git(bare, "for-each-ref", "--format=%(objectname)", f"refs/heads/{BRANCH}")


def test_advances_only_along_the_tracked_branch(setup) -> None:
    bare, branch, first, second, side = setup
    branch.apply(branch.plan_advance(first))
    assert tip(bare) == first
    with pytest.raises(DeployBranchError, match="is not on main"):
        branch.plan_advance(side)
    assert tip(bare) == first
    move = branch.plan_advance(second)
    assert (move.before, move.after, move.push) == (first, second, "fast-forward")
    branch.apply(move)
    assert tip(bare) == second
    # An older merge (superseded) never moves it back.
    assert branch.plan_advance(first).push == "none"


def test_rolls_back_only_to_an_earlier_ledger_revision(setup) -> None:
    bare, branch, first, second, side = setup
    branch.apply(branch.plan_advance(second))
    with pytest.raises(DeployBranchError, match="not an earlier ledger revision"):
        branch.plan_rollback(side, [first])
    move = branch.plan_rollback(first, [first])
    branch.apply(move)
    assert tip(bare) == first and move.record() == {
        "branch": BRANCH, "from": second, "to": first, "push": "force-with-lease"
    }  # fmt: skip


def test_a_concurrent_move_is_never_overwritten(setup) -> None:
    bare, branch, first, second, _ = setup
    branch.apply(branch.plan_advance(second))
    move = branch.plan_rollback(first, [first])
    git(bare, "update-ref", f"refs/heads/{BRANCH}", first)  # someone moves it meanwhile
    git(bare, "update-ref", f"refs/heads/{BRANCH}", second)
    commit_elsewhere = git(bare, "commit-tree", "-p", second, "-m", "x", f"{second}^{{tree}}")
    git(bare, "update-ref", f"refs/heads/{BRANCH}", commit_elsewhere)
    with pytest.raises(DeployBranchError, match="moved while Sluice was moving it"):
        branch.apply(move)
    assert tip(bare) == commit_elsewhere


def test_config(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("repos:\n  - {match: '*', deploy_branch: sluice/approved}\n")
    (settings,) = load_repo_settings(path)
    assert settings.deploy_branch == "sluice/approved"
    path.write_text("repos:\n  - {match: '*', repo_urls: ['https://github.com/acme/fleet*']}\n")
    assert load_repo_settings(path)[0].deploy_branch is None
    assert load_repo_settings(path)[0].repo_urls == ("https://github.com/acme/fleet*",)
    path.write_text("repos:\n  - {match: '*', deploy_branch: main}\n")
    with pytest.raises(ConfigError, match="deploy_branch: must differ from tracked_branch"):
        load_repo_settings(path)


@pytest.mark.parametrize(
    ("app", "valid"),
    [
        ("web", True),
        ("argocd:svc-web", True),
        ("flux:flux-system/apps", True),
        ("flux:../apps", False),
        ("argocd:../../etc/passwd", False),
        ("flux:ns/a/b", False),
        ("argocd:/abs", False),
    ],
)
def test_ledger_accepts_discovered_app_names_and_nothing_that_escapes(
    tmp_path: Path, app: str, valid: bool
) -> None:
    """Discovered apps (argocd:<name>, flux:<ns>/<name>) get ledger entries like any app."""
    sha = "a" * 40
    if not valid:
        with pytest.raises(LedgerError, match="app: must be"):
            LedgerEntry(app=app, revision=sha)
        return
    entry = LedgerEntry(app=app, revision=sha)
    assert entry.path == f"apps/{app}.yaml"
    work = tmp_path / "ledger"
    work.mkdir()
    git(work, "init", "-q", "--bare")
    ledger = Ledger(Git(work))
    key = tmp_path / "bot_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    signer = BotSigner(SigningConfig("ssh", str(key)))
    ledger.record([entry], signer, f"deploy {app}")
    assert ledger.read(app) == replace(entry, previous=None)

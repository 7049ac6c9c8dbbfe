"""bot.signatures against real gpg, ssh-keygen and git-signed commits."""

from __future__ import annotations

import functools
import os
import sqlite3
import stat
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.gitops import Git
from bot.models import CommitCheck
from bot.signatures import (
    SignatureVerifier,
    TrustedKeys,
    TrustedKeysError,
    split_signed_commit,
)
from bot.signatures.cache import VerdictCache
from bot.signatures.result import Checked
from tests import gpgkit
from tests.gpgkit import commit, git

PAST = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass
class World:
    repo: Path
    keys_dir: Path
    base: str
    shas: dict[str, str]  # commit name -> sha
    fprs: dict[str, str]  # gpg key name -> fingerprint
    ssh: dict[str, gpgkit.SshKey]
    signing: dict[str, list[str]]  # signer name -> git -c options

    @property
    def git(self) -> Git:
        return Git(self.repo)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("sig")
    home = gpgkit.new_gnupghome(tmp / "gnupg")
    fprs = {
        "alice": gpgkit.make_gpg_key(home, "Alice <alice@example.com>"),
        "mallory": gpgkit.make_gpg_key(home, "Mallory <mallory@example.com>"),
        "rita": gpgkit.make_gpg_key(home, "Rita <rita@example.com>"),
        "ed": gpgkit.make_gpg_key(home, "Ed <ed@example.com>", "1d", faked_time=PAST),
    }
    ssh = {name: gpgkit.make_ssh_key(tmp / "ssh", name) for name in ("bob", "sam", "olga")}
    signing = {name: gpgkit.gpg_signing_config(home, fpr) for name, fpr in fprs.items()}
    signing["ed"] = gpgkit.gpg_signing_config(home, fprs["ed"], faked_time=PAST.replace(hour=1))
    signing.update({name: gpgkit.ssh_signing_config(key) for name, key in ssh.items()})

    repo = gpgkit.init_repo(tmp / "repo")
    base = commit(repo, "base", files={"README": "hello\n"})
    git(repo, "checkout", "-q", "-b", "pr")
    shas = {"base": base}
    for name, signer in [
        ("gpg_valid", "alice"),
        ("ssh_valid", "bob"),
        ("unsigned", None),
        ("gpg_untrusted", "mallory"),
        ("ssh_untrusted", "sam"),
        ("gpg_expired", "ed"),
        ("ssh_expired", "olga"),
        ("gpg_revoked", "rita"),
    ]:
        config = signing[signer] if signer else []
        shas[name] = commit(repo, name, files={f"{name}.txt": name}, config=config)
    git(repo, "checkout", "-q", "-b", "good", base)
    shas["good_1"] = commit(repo, "good 1", files={"a": "1"}, config=signing["alice"])
    shas["good_2"] = commit(repo, "good 2", files={"b": "2"}, config=signing["bob"])
    shas["gpg_invalid"] = gpgkit.forge_commit(
        repo, shas["good_1"], b"good 1", b"evil 1", branch="tampered-gpg"
    )
    shas["ssh_invalid"] = gpgkit.forge_commit(
        repo, shas["good_2"], b"good 2", b"evil 2", branch="tampered-ssh"
    )
    # Rita's key is revoked after she signed: the trusted export carries the revocation.
    gpgkit.revoke_key(home, fprs["rita"])

    keys_dir = tmp / "trusted"
    keys_dir.mkdir()
    for name in ("alice", "ed", "rita"):
        (keys_dir / f"{name}.asc").write_text(gpgkit.export_public(home, fprs[name]))
    (keys_dir / "allowed_signers").write_text(
        "# trusted SSH signers\n"
        + gpgkit.allowed_signers_line("bob@example.com", ssh["bob"])
        + gpgkit.allowed_signers_line(
            "olga@example.com", ssh["olga"], 'namespaces="git",valid-before="20200101"'
        )
    )
    yield World(repo, keys_dir, base, shas, fprs, ssh, signing)
    gpgkit.kill_agent(home)


@pytest.fixture(scope="module")
def verifier(world: World):
    with SignatureVerifier(TrustedKeys.load(world.keys_dir)) as v:
        yield v


@pytest.mark.parametrize(
    ("name", "status", "method", "signer"),
    [
        ("gpg_valid", "valid", "gpg", "Alice <alice@example.com>"),
        ("ssh_valid", "valid", "ssh", "bob@example.com"),
        ("unsigned", "unsigned", "none", ""),
        ("gpg_untrusted", "untrusted", "gpg", ""),
        ("ssh_untrusted", "untrusted", "ssh", ""),
        ("gpg_invalid", "invalid", "gpg", "Alice <alice@example.com>"),
        ("ssh_invalid", "invalid", "ssh", "bob@example.com"),
        ("gpg_expired", "expired", "gpg", "Ed <ed@example.com>"),
        ("ssh_expired", "expired", "ssh", ""),
        ("gpg_revoked", "revoked", "gpg", "Rita <rita@example.com>"),
    ],
)
def test_check_commit_reports_each_status(world, verifier, name, status, method, signer):
    check = verifier.check_commit(world.git, world.shas[name])
    assert (check.sha, check.status, check.method, check.signer) == (
        world.shas[name],
        status,
        method,
        signer,
    )


def test_fingerprints_identify_the_signing_key(world, verifier):
    checks = {n: verifier.check_commit(world.git, world.shas[n]) for n in world.shas}
    assert checks["gpg_valid"].fingerprint == world.fprs["alice"]
    assert checks["gpg_revoked"].fingerprint == world.fprs["rita"]
    assert checks["gpg_expired"].fingerprint == world.fprs["ed"]
    # An unknown OpenPGP key is still named, by the fingerprint in its signature.
    assert checks["gpg_untrusted"].fingerprint == world.fprs["mallory"]
    assert checks["ssh_valid"].fingerprint == world.ssh["bob"].fingerprint
    assert checks["ssh_untrusted"].fingerprint == world.ssh["sam"].fingerprint
    assert checks["ssh_expired"].fingerprint == world.ssh["olga"].fingerprint
    assert checks["unsigned"].fingerprint == ""


def test_check_commit_agrees_with_git_verify_commit(world, verifier):
    """Our split of payload and signature is git's: gpg and git agree on every commit."""
    env = gpgkit.git_signing_env(world.repo / ".." / "gnupg")
    for name in ("gpg_valid", "gpg_invalid", "gpg_revoked"):
        proc = subprocess.run(
            ["git", "-C", str(world.repo), "verify-commit", "--raw", world.shas[name]],
            capture_output=True,
            env=env,
        )
        git_good = b"[GNUPG:] GOODSIG" in proc.stderr or b"REVKEYSIG" in proc.stderr
        ours = verifier.check_commit(world.git, world.shas[name]).status
        assert git_good == (ours in ("valid", "revoked")), (name, proc.stderr)


def test_mode_all_checks_every_commit_oldest_first(world, verifier):
    report = verifier.verify(world.git, "main", "pr", "all")
    assert report.verdict == "fail"
    assert report.mode == "all"
    names = [
        "gpg_valid",
        "ssh_valid",
        "unsigned",
        "gpg_untrusted",
        "ssh_untrusted",
        "gpg_expired",
        "ssh_expired",
        "gpg_revoked",
    ]
    assert [c.sha for c in report.commits] == [world.shas[n] for n in names]
    assert [c.status for c in report.commits] == [
        "valid",
        "valid",
        "unsigned",
        "untrusted",
        "untrusted",
        "expired",
        "expired",
        "revoked",
    ]
    first = report.to_dict()["commits"][0]
    assert {k: first[k] for k in ("sha", "status", "method", "signer", "fingerprint")} == {
        "sha": world.shas["gpg_valid"],
        "status": "valid",
        "method": "gpg",
        "signer": "Alice <alice@example.com>",
        "fingerprint": world.fprs["alice"],
    }


def test_mode_all_passes_when_every_commit_is_valid(world, verifier):
    report = verifier.verify(world.git, "main", "good", "all")
    assert report.verdict == "pass"
    assert [(c.method, c.status) for c in report.commits] == [("gpg", "valid"), ("ssh", "valid")]


def test_mode_head_checks_only_the_head_commit(world, verifier):
    # pr's history is full of bad commits, but its head is only revoked: one check.
    report = verifier.verify(world.git, "main", "pr", "head")
    assert [c.sha for c in report.commits] == [world.shas["gpg_revoked"]]
    assert report.verdict == "fail"
    passing = verifier.verify(world.git, "main", "good", "head")
    assert (passing.verdict, len(passing.commits)) == ("pass", 1)
    failing = verifier.verify(world.git, "main", "tampered-gpg", "head")
    assert failing.verdict == "fail"
    assert failing.commits[0].status == "invalid"


def test_mode_off_checks_nothing(world, verifier):
    report = verifier.verify(world.git, "main", "pr", "off")
    assert (report.verdict, report.mode, report.commits) == ("skipped", "off", [])


def test_unknown_mode_is_rejected(world, verifier):
    with pytest.raises(ValueError, match="unknown signature mode 'some'"):
        verifier.verify(world.git, "main", "pr", "some")


def test_keys_added_in_the_pr_change_nothing(world, tmp_path):
    """A PR that ships its own key and allowed_signers is still untrusted."""
    repo = tmp_path / "repo"
    git(tmp_path, "clone", "-q", str(world.repo), str(repo))
    git(repo, "checkout", "-q", "-b", "sneaky", "origin/main")
    home = world.repo.parent / "gnupg"
    commit(
        repo,
        "trust me",
        files={
            "mallory.asc": gpgkit.export_public(home, world.fprs["mallory"]),
            "allowed_signers": gpgkit.allowed_signers_line("sam@example.com", world.ssh["sam"]),
            "trusted/mallory.asc": gpgkit.export_public(home, world.fprs["mallory"]),
        },
        config=world.signing["mallory"],
    )
    commit(repo, "ssh too", config=world.signing["sam"])
    with SignatureVerifier(TrustedKeys.load(world.keys_dir)) as verifier:
        report = verifier.verify(Git(repo), "origin/main", "sneaky", "all")
    assert [c.status for c in report.commits] == ["untrusted", "untrusted"]
    assert report.verdict == "fail"


@pytest.mark.parametrize("make_dir", [False, True])
def test_no_trusted_keys_fails_closed(world, tmp_path, make_dir):
    keys_dir = tmp_path / "nothing-here"
    if make_dir:
        keys_dir.mkdir()
        (keys_dir / "README").write_text("keys go here\n")
    keys = TrustedKeys.load(keys_dir)
    assert keys.is_empty
    assert "every signed commit is reported untrusted" in keys.notes[0]
    assert str(keys_dir) in keys.notes[0]
    with SignatureVerifier(keys) as verifier:
        report = verifier.verify(world.git, "main", "good", "all")
    assert report.verdict == "fail"
    assert [c.status for c in report.commits] == ["untrusted", "untrusted"]
    assert all(c.detail == keys.notes[0] for c in report.commits)


def test_malformed_key_file_names_the_file(world, tmp_path):
    (tmp_path / "alice.asc").write_text((world.keys_dir / "alice.asc").read_text())
    broken = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64 at all!\n-----END PGP PUBLIC KEY BLOCK-----\n"
    (tmp_path / "broken.asc").write_text(broken)
    with pytest.raises(TrustedKeysError, match=r"broken\.asc holds no valid OpenPGP public key"):
        TrustedKeys.load(tmp_path)
    (tmp_path / "broken.asc").write_text("just some text\n")
    with pytest.raises(TrustedKeysError, match=r"broken\.asc is not an ASCII-armored"):
        TrustedKeys.load(tmp_path)


def test_private_key_file_is_refused_without_echoing_it(world, tmp_path):
    home = world.repo.parent / "gnupg"
    secret = gpgkit._gpg(home, "--armor", "--export-secret-keys", world.fprs["alice"])
    (tmp_path / "oops.asc").write_text(secret)
    with pytest.raises(TrustedKeysError) as info:
        TrustedKeys.load(tmp_path)
    message = str(info.value)
    assert "oops.asc" in message and "PRIVATE" in message
    body_line = secret.splitlines()[3]
    assert body_line not in message


def test_malformed_allowed_signers_names_file_and_line(world, tmp_path):
    (tmp_path / "allowed_signers").write_text(
        gpgkit.allowed_signers_line("bob@example.com", world.ssh["bob"])
        + "\n# comment\nbob@example.com ssh-ed25519 %%%notbase64\n"
    )
    with pytest.raises(TrustedKeysError, match=r"allowed_signers:4: not an allowed_signers entry"):
        TrustedKeys.load(tmp_path)


def test_trust_id_follows_key_material_not_file_names(world, tmp_path):
    for name in ("alice.asc", "allowed_signers"):
        (tmp_path / f"renamed-{name}" if name.endswith(".asc") else tmp_path / name).write_text(
            (world.keys_dir / name).read_text()
        )
    only_alice_and_bob = TrustedKeys.load(tmp_path)
    assert only_alice_and_bob.trust_id != TrustedKeys.load(world.keys_dir).trust_id
    (tmp_path / "renamed-alice.asc").rename(tmp_path / "other-name.asc")
    assert TrustedKeys.load(tmp_path).trust_id == only_alice_and_bob.trust_id


def _counting_gpg(bin_dir: Path, log: Path) -> None:
    """A ``gpg`` first on PATH that records each call, then runs the real one."""
    real = next(
        Path(d) / "gpg"
        for d in os.environ["PATH"].split(os.pathsep)
        if (Path(d) / "gpg").is_file() and Path(d) != bin_dir
    )
    bin_dir.mkdir()
    wrapper = bin_dir / "gpg"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)


def _verify_calls(log: Path) -> int:
    if not log.exists():
        return 0
    return sum("--verify" in line for line in log.read_text().splitlines())


def test_second_run_is_served_from_cache_without_gpg(world, tmp_path, monkeypatch):
    log = tmp_path / "gpg-calls.log"
    _counting_gpg(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    keys = TrustedKeys.load(world.keys_dir)
    cache_dir = tmp_path / "cache"

    with SignatureVerifier(keys, cache_dir=cache_dir) as verifier:
        first = verifier.verify(world.git, "main", "pr", "all")
        calls_after_first = _verify_calls(log)
        assert calls_after_first >= 1
        again = verifier.verify(world.git, "main", "pr", "all")
        assert _verify_calls(log) == calls_after_first  # in-memory cache
    assert again == first

    with SignatureVerifier(keys, cache_dir=cache_dir) as fresh:
        from_disk = fresh.verify(world.git, "main", "pr", "all")
    assert _verify_calls(log) == calls_after_first  # on-disk cache, new process state
    assert from_disk == first


def test_cache_is_not_shared_between_trust_sets(world, tmp_path):
    cache_dir = tmp_path / "cache"
    with SignatureVerifier(TrustedKeys.load(world.keys_dir), cache_dir=cache_dir) as verifier:
        assert verifier.check_commit(world.git, world.shas["gpg_valid"]).status == "valid"
    narrower = tmp_path / "keys"
    narrower.mkdir()
    (narrower / "ed.asc").write_text((world.keys_dir / "ed.asc").read_text())
    with SignatureVerifier(TrustedKeys.load(narrower), cache_dir=cache_dir) as verifier:
        assert verifier.check_commit(world.git, world.shas["gpg_valid"]).status == "untrusted"
        assert verifier.check_commit(world.git, world.shas["ssh_valid"]).status == "untrusted"


def test_cached_verdict_expires_with_its_key(tmp_path):
    cache = VerdictCache("trust", tmp_path)
    now = time.time()
    cache.put_many(
        [
            Checked(CommitCheck("a" * 40, "valid", "gpg"), valid_until=now + 3600),
            Checked(CommitCheck("b" * 40, "valid", "gpg"), valid_until=now - 1),
            Checked(CommitCheck("c" * 40, "unsigned", "none")),
        ]
    )
    cache.close()
    reopened = VerdictCache("trust", tmp_path)
    assert sorted(reopened.get_many(["a" * 40, "b" * 40, "c" * 40])) == ["a" * 40, "c" * 40]
    assert VerdictCache("other trust", tmp_path).get_many(["a" * 40]) == {}


def test_valid_verdict_is_cached_only_until_the_key_expires(world, tmp_path):
    home = world.repo.parent / "gnupg"
    fpr = gpgkit.make_gpg_key(home, "Temp <temp@example.com>", "2d")
    repo = gpgkit.init_repo(tmp_path / "repo")
    sha = commit(repo, "short-lived key", config=gpgkit.gpg_signing_config(home, fpr))
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "temp.asc").write_text(gpgkit.export_public(home, fpr))
    with SignatureVerifier(TrustedKeys.load(tmp_path / "keys"), tmp_path / "cache") as verifier:
        assert verifier.check_commit(Git(repo), sha).status == "valid"
    with sqlite3.connect(tmp_path / "cache" / "signatures.sqlite3") as db:
        (until,) = db.execute("SELECT valid_until FROM verdicts").fetchone()
    assert 86400 < until - time.time() <= 2 * 86400 + 60


def test_batch_recovers_after_a_bad_signature_mid_range(world, tmp_path, monkeypatch):
    """gpg stops a batch at a bad signature; every other verdict must still be exact."""
    log = tmp_path / "gpg-calls.log"
    _counting_gpg(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    repo = tmp_path / "repo"
    git(tmp_path, "clone", "-q", str(world.repo), str(repo))
    main = git(repo, "rev-parse", "origin/main")
    alice = world.signing["alice"]
    before = gpgkit.commit_chain(repo, main, [f"before {i}" for i in range(40)], alice)
    forged = gpgkit.forge_commit(repo, before[-1], b"before 39", b"BEFORE 39")
    after = gpgkit.commit_chain(repo, forged, [f"after {i}" for i in range(60)], alice)
    (untrusted,) = gpgkit.commit_chain(repo, after[-1], ["mallory"], world.signing["mallory"])
    git(repo, "branch", "-f", "long", untrusted)

    with SignatureVerifier(TrustedKeys.load(world.keys_dir)) as verifier:
        report = verifier.verify(Git(repo), "origin/main", "long", "all")
        expected = {sha: "valid" for sha in before[:-1] + after}
        expected[forged] = "invalid"
        expected[untrusted] = "untrusted"
        assert {c.sha: c.status for c in report.commits} == expected
        assert len(report.commits) == 101
        # Batched: a handful of gpg processes, not one per commit.
        assert 1 < _verify_calls(log) <= 6
        one_by_one = SignatureVerifier(TrustedKeys.load(world.keys_dir))
        try:
            for check in report.commits[35:45]:
                assert one_by_one.check_commit(Git(repo), check.sha) == check
        finally:
            one_by_one.close()


def test_sha256_repository_uses_the_gpgsig_sha256_header(world, tmp_path):
    repo = tmp_path / "repo256"
    repo.mkdir()
    git(repo, "init", "-q", "--object-format=sha256", "-b", "main")
    sha = commit(repo, "sha256 commit", files={"f": "x"}, config=world.signing["alice"])
    raw = git(repo, "cat-file", "commit", sha)
    assert "\ngpgsig-sha256 -----BEGIN PGP SIGNATURE-----" in raw
    with SignatureVerifier(TrustedKeys.load(world.keys_dir)) as verifier:
        check = verifier.check_commit(Git(repo), sha)
    assert (check.status, check.fingerprint) == ("valid", world.fprs["alice"])


def test_split_matches_git_rules_for_signature_headers():
    raw = (
        b"tree 1234\n"
        b"author A <a@x> 1 +0000\n"
        b"committer A <a@x> 1 +0000\n"
        b"gpgsig -----BEGIN PGP SIGNATURE-----\n"
        b" \n"
        b" abc\n"
        b" -----END PGP SIGNATURE-----\n"
        b"gpgsig-sha256 -----BEGIN PGP SIGNATURE-----\n"
        b" other\n"
        b" -----END PGP SIGNATURE-----\n"
        b"mergetag object 1\n"
        b" type commit\n"
        b"\n"
        b"message\n"
        b"gpgsig not a header here\n"
        b" indented body line\n"
    )
    commit_ = split_signed_commit("f" * 40, raw)
    assert commit_.signature == (
        b"-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
    )
    assert commit_.payload == (
        b"tree 1234\n"
        b"author A <a@x> 1 +0000\n"
        b"committer A <a@x> 1 +0000\n"
        b"mergetag object 1\n"
        b" type commit\n"
        b"\n"
        b"message\n"
        b"gpgsig not a header here\n"
        b" indented body line\n"
    )
    in_sha256_repo = split_signed_commit("f" * 64, raw)
    assert in_sha256_repo.signature == (
        b"-----BEGIN PGP SIGNATURE-----\nother\n-----END PGP SIGNATURE-----\n"
    )
    assert in_sha256_repo.payload == commit_.payload
    assert not split_signed_commit("f" * 40, b"tree 1\n\nmsg\n").is_signed


def test_garbage_signature_is_invalid_not_an_error(world, tmp_path):
    repo = tmp_path / "repo"
    git(tmp_path, "clone", "-q", str(world.repo), str(repo))
    raw = git(repo, "cat-file", "commit", world.shas["good_1"]).encode() + b"\n"
    headers, _, message = raw.partition(b"\n\n")
    cases = {
        "not base64": b"-----BEGIN PGP SIGNATURE-----\n \n @@@@\n -----END PGP SIGNATURE-----",
        "embedded message": b"-----BEGIN PGP MESSAGE-----\n \n owGbwMvMSHQ=\n -----END PGP MESSAGE-----",
        "unknown": b"hello",
    }
    with SignatureVerifier(TrustedKeys.load(world.keys_dir)) as verifier:
        for label, signature in cases.items():
            unsigned_headers = b"\n".join(
                line for line in headers.split(b"\n") if not line.startswith((b"gpgsig", b" "))
            )
            forged = unsigned_headers + b"\ngpgsig " + signature + b"\n\n" + message
            sha = git(repo, "hash-object", "-t", "commit", "-w", "--stdin", input=forged)
            check = verifier.check_commit(Git(repo), sha)
            assert check.status == "invalid", label


def test_text_mode_signature_is_checked_like_git_does(world, tmp_path):
    """A canonical-text (class 0x01) signature takes gpg's detached path, exactly as git."""
    home = world.repo.parent / "gnupg"
    textmode = gpgkit.gpg_signing_config(home, world.fprs["alice"], extra=("--textmode",))
    repo = gpgkit.init_repo(tmp_path / "repo")
    base = commit(repo, "base")
    good, bad_parent = gpgkit.commit_chain(repo, base, ["text mode", "text mode 2"], textmode)
    forged = gpgkit.forge_commit(repo, good, b"text mode", b"TEXT MODE")
    with SignatureVerifier(TrustedKeys.load(world.keys_dir)) as verifier:
        statuses = [verifier.check_commit(Git(repo), s).status for s in (good, bad_parent, forged)]
    assert statuses == ["valid", "valid", "invalid"]


def test_clean_and_evil_merges_are_told_apart(tmp_path: Path) -> None:
    """An unsigned forge merge is acceptable only if it adds nothing to its parents."""
    from bot.signatures.merges import is_clean_merge

    repo = tmp_path / "merges"
    run = functools.partial(subprocess.run, check=True, capture_output=True, cwd=repo)
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"])
    (repo / "a.txt").write_text("one\n")
    run(["git", "add", "-A"])
    run(["git", "-c", "commit.gpgsign=false", "commit", "-q", "-m", "base"])
    run(["git", "checkout", "-q", "-b", "feature"])
    (repo / "b.txt").write_text("feature\n")
    run(["git", "add", "-A"])
    run(["git", "-c", "commit.gpgsign=false", "commit", "-q", "-m", "feature"])
    run(["git", "checkout", "-q", "main"])
    (repo / "c.txt").write_text("main moved on\n")
    run(["git", "add", "-A"])
    run(["git", "-c", "commit.gpgsign=false", "commit", "-q", "-m", "main"])
    run(["git", "-c", "commit.gpgsign=false", "merge", "-q", "--no-ff", "-m", "merge", "feature"])
    git = Git(repo)
    clean = git.resolve("HEAD")
    assert is_clean_merge(git, clean)

    (repo / "evil.txt").write_text("slipped in by the merge\n")
    run(["git", "add", "-A"])
    run(["git", "-c", "commit.gpgsign=false", "commit", "-q", "--amend", "--no-edit"])
    assert not is_clean_merge(git, git.resolve("HEAD"))
    assert not is_clean_merge(git, git.resolve("feature"))  # not a merge at all

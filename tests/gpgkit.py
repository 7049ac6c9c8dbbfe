"""Real signing keys and signed git commits for tests.

Everything here drives the real tools (gpg, ssh-keygen, git) in directories the
caller owns, typically from ``tmp_path_factory``. Keys are unprotected ed25519
keys, which gpg and ssh-keygen make in milliseconds.

Typical use::

    home = new_gnupghome(tmp / "gnupg")
    fpr = make_gpg_key(home, "Alice <alice@example.com>")
    repo = init_repo(tmp / "repo")
    sha = commit(repo, "signed", config=gpg_signing_config(home, fpr))
    (keys_dir / "alice.asc").write_text(export_public(home, fpr))
    ...
    kill_agent(home)  # at teardown: signing started a gpg-agent for this home

Key and signature times can be moved into the past with ``faked_time`` (gpg's
``--faked-system-time``), which is how an expired key is made: create it in the
past with a short expiry and sign while it was still valid.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import stat
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

GIT_IDENTITY = ("-c", "user.name=Sluice Test", "-c", "user.email=test@example.com")


def _run(args: list[str], *, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, input=input, capture_output=True, env=env, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode(errors="replace")


def _gpg(home: Path, *args: str, faked_time: datetime | None = None, input: bytes | None = None):
    cmd = ["gpg", "--homedir", str(home), "--batch", "--no-tty"]
    if faked_time is not None:
        cmd += ["--faked-system-time", gpg_time(faked_time)]
    return _run([*cmd, *args], input=input)


def gpg_time(when: datetime) -> str:
    """``when`` in the form ``--faked-system-time`` takes (the ``!`` freezes the clock)."""
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%S") + "!"


# --- OpenPGP keys


def new_gnupghome(path: Path) -> Path:
    """An empty gpg home directory (mode 0700, as gpg insists)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def make_gpg_key(
    home: Path,
    uid: str,
    expire: str | None = None,
    *,
    algo: str = "ed25519",
    faked_time: datetime | None = None,
) -> str:
    """Generate an unprotected signing key in ``home``; return its fingerprint.

    ``expire`` is anything ``gpg --quick-gen-key`` takes ("1d", "2030-01-01", ...);
    None means it never expires. With ``faked_time`` the key is created then.
    """
    _gpg(
        home,
        "--passphrase", "",
        "--quick-gen-key", uid, algo, "sign", expire or "never",
        faked_time=faked_time,
    )  # fmt: skip
    listing = _gpg(home, "--with-colons", "--list-keys", f"={uid}")
    fingerprints = re.findall(r"^fpr:(?:[^:]*:){8}([0-9A-F]{40}):", listing, re.MULTILINE)
    return fingerprints[-1]


def export_public(home: Path, fpr: str) -> str:
    """The ASCII-armored public key (with any revocation or expiry it carries now)."""
    return _gpg(home, "--armor", "--export", fpr)


def set_expire(home: Path, fpr: str, expire: str, *, faked_time: datetime | None = None) -> None:
    """Change the primary key's expiry (``gpg --quick-set-expire``)."""
    _gpg(home, "--quick-set-expire", fpr, expire, faked_time=faked_time)


def revoke_key(home: Path, fpr: str) -> None:
    """Import the revocation certificate gpg wrote when it made the key: the key is revoked."""
    certificate = (home / "openpgp-revocs.d" / f"{fpr}.rev").read_text()
    # gpg guards the stored certificate with a leading colon against accidental import.
    _gpg(home, "--import", input=certificate.replace(":-----BEGIN", "-----BEGIN").encode())


def kill_agent(home: Path) -> None:
    """Stop the gpg-agent that signing started for ``home``."""
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30
    )


def gpg_program(
    home: Path, faked_time: datetime | None = None, extra: tuple[str, ...] = ()
) -> Path:
    """An executable for git's ``gpg.program`` that runs gpg on ``home``.

    ``faked_time`` signs at that time; ``extra`` adds gpg options (e.g. ``--textmode``).
    """
    options = ["--homedir", str(home), *extra]
    if faked_time is not None:
        options += ["--faked-system-time", gpg_time(faked_time)]
    tag = hashlib.sha1(shlex.join(options).encode()).hexdigest()[:10]
    script = home / f"gpg-program-{tag}.sh"
    script.write_text(f'#!/bin/sh\nexec gpg {shlex.join(options)} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def gpg_signing_config(
    home: Path, fpr: str, faked_time: datetime | None = None, extra: tuple[str, ...] = ()
) -> list[str]:
    """``git -c`` options that sign with key ``fpr`` from ``home`` (see :func:`gpg_program`)."""
    return [
        "-c", "gpg.format=openpgp",
        "-c", f"gpg.program={gpg_program(home, faked_time, extra)}",
        "-c", f"user.signingkey={fpr}",
        "-c", "commit.gpgsign=true",
    ]  # fmt: skip


def git_signing_env(home: Path) -> dict[str, str]:
    """The process environment with ``GNUPGHOME`` pointing at ``home`` (for plain ``gpg``)."""
    return {**os.environ, "GNUPGHOME": str(home)}


# --- SSH keys


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: str  # "ssh-ed25519 AAAA... comment"
    fingerprint: str  # "SHA256:..."


def make_ssh_key(directory: Path, name: str) -> SshKey:
    """An unprotected ed25519 SSH key pair ``directory/name`` and ``.pub``."""
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / name
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(private)])
    public = private.with_suffix(".pub").read_text().strip()
    fingerprint = _run(["ssh-keygen", "-l", "-f", str(private)]).split()[1]
    return SshKey(private=private, public=public, fingerprint=fingerprint)


def ssh_signing_config(key: SshKey) -> list[str]:
    """``git -c`` options that sign with the SSH ``key``."""
    return [
        "-c", "gpg.format=ssh",
        "-c", f"user.signingkey={key.private}",
        "-c", "commit.gpgsign=true",
    ]  # fmt: skip


def allowed_signers_line(principal: str, key: SshKey, options: str = 'namespaces="git"') -> str:
    """One allowed_signers entry trusting ``key`` as ``principal``."""
    return f"{principal} {options} {key.public}\n" if options else f"{principal} {key.public}\n"


# --- git repositories


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    """Run git in ``repo`` with a fixed identity and no user or system config."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return _run(["git", "-C", str(repo), *GIT_IDENTITY, *args], input=input, env=env).strip()


def init_repo(path: Path, branch: str = "main") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    return path


def commit(
    repo: Path,
    message: str,
    *,
    files: dict[str, str] | None = None,
    config: list[str] | tuple[str, ...] = (),
) -> str:
    """Write ``files``, commit everything (signed if ``config`` says so); return the SHA."""
    for name, content in (files or {}).items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(repo, "add", "-A")
    git(repo, *config, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def commit_chain(
    repo: Path, parent: str, messages: list[str], config: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """Commits on top of ``parent`` with its tree, one per message (signed per ``config``).

    Uses ``git commit-tree``: no index or work tree, so long chains are quick.
    Moves no ref; returns the new SHAs, oldest first.
    """
    tree = git(repo, "rev-parse", f"{parent}^{{tree}}")
    sign = ["-S"] if "commit.gpgsign=true" in config else []
    shas = []
    for message in messages:
        parent = git(repo, *config, "commit-tree", *sign, "-p", parent, "-m", message, tree)
        shas.append(parent)
    return shas


def forge_commit(repo: Path, sha: str, old: bytes, new: bytes, branch: str | None = None) -> str:
    """A copy of commit ``sha`` with ``old`` replaced by ``new`` but the signature kept.

    The result is what an attacker gets by editing a signed commit: its signature
    no longer matches. With ``branch``, that branch is pointed at it.
    """
    raw = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "commit", sha], capture_output=True, check=True
    ).stdout
    if old not in raw:
        raise ValueError(f"{old!r} not in commit {sha}")
    forged = git(repo, "hash-object", "-t", "commit", "-w", "--stdin", input=raw.replace(old, new))
    if branch:
        git(repo, "update-ref", f"refs/heads/{branch}", forged)
    return forged

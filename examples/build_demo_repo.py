#!/usr/bin/env python3
"""Build the demo GitOps repository from the plain files in examples/demo/.

A repository cannot ship another repository's history, so this script makes one:
``main`` holds examples/demo/main plus the default policy library, and the
``feature`` branch applies each examples/demo/steps/NN-*/ directory as one commit,
signed as its step.yaml says (trusted OpenPGP, trusted SSH, untrusted OpenPGP or
unsigned). Keys are generated fresh; the trusted public keys are written to
``<dest>.keys/`` for ``sluice preview --keys``.

Usage: build_demo_repo.py DEST
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DEMO = HERE / "demo"
POLICIES = HERE.parent / "policies"
TRUSTED_UID = "Demo Maintainer <maintainer@demo.sluice.dev>"
UNTRUSTED_UID = "Mallory <mallory@example.invalid>"
SSH_PRINCIPAL = "alice@demo.sluice.dev"


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])}… failed: {proc.stderr.strip()}")
    return proc.stdout


class Signers:
    """Throwaway OpenPGP and SSH keys, and the git settings to sign with each."""

    def __init__(self, workdir: Path) -> None:
        self.gnupg_home = workdir / "gnupg"
        self.gnupg_home.mkdir(mode=0o700)
        self.env = {**os.environ, "GNUPGHOME": str(self.gnupg_home)}
        self.trusted_fpr = self._gpg_key(TRUSTED_UID)
        self.untrusted_fpr = self._gpg_key(UNTRUSTED_UID)
        self.ssh_key = workdir / "alice_ed25519"
        run(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            SSH_PRINCIPAL,
            "-f",
            str(self.ssh_key),
        )

    def _gpg_key(self, uid: str) -> str:
        run(
            "gpg",
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
            env=self.env,
        )
        listing = run("gpg", "--batch", "--with-colons", "--list-secret-keys", uid, env=self.env)
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))

    def git_config(self, signer: str) -> list[str]:
        if signer == "none":
            return ["-c", "commit.gpgsign=false"]
        if signer == "trusted-ssh":
            return [
                "-c",
                "gpg.format=ssh",
                "-c",
                f"user.signingkey={self.ssh_key}",
                "-c",
                "commit.gpgsign=true",
            ]
        fpr = {"trusted-gpg": self.trusted_fpr, "untrusted-gpg": self.untrusted_fpr}[signer]
        return [
            "-c",
            "gpg.format=openpgp",
            "-c",
            f"user.signingkey={fpr}",
            "-c",
            "commit.gpgsign=true",
        ]

    def write_trusted_keys(self, keys_dir: Path) -> None:
        keys_dir.mkdir(parents=True)
        armored = run("gpg", "--batch", "--armor", "--export", self.trusted_fpr, env=self.env)
        (keys_dir / "maintainer.asc").write_text(armored)
        public = (self.ssh_key.with_suffix(".pub")).read_text().split()
        (keys_dir / "allowed_signers").write_text(
            f'{SSH_PRINCIPAL} namespaces="git" {public[0]} {public[1]}\n'
        )

    def close(self) -> None:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=self.env, capture_output=True)


def commit(repo: Path, signers: Signers, signer: str, message: str, when: int) -> None:
    env = {
        **signers.env,
        "GIT_AUTHOR_NAME": "Demo Maintainer",
        "GIT_AUTHOR_EMAIL": "maintainer@demo.sluice.dev",
        "GIT_COMMITTER_NAME": "Demo Maintainer",
        "GIT_COMMITTER_EMAIL": "maintainer@demo.sluice.dev",
        "GIT_AUTHOR_DATE": f"{when} +0000",
        "GIT_COMMITTER_DATE": f"{when} +0000",
    }
    run("git", "add", "-A", cwd=repo, env=env)
    run("git", *signers.git_config(signer), "commit", "-q", "-m", message, cwd=repo, env=env)


def apply_step(repo: Path, step: Path) -> dict:
    meta = yaml.safe_load((step / "step.yaml").read_text())
    for doomed in meta.get("delete", []):
        shutil.rmtree(repo / doomed)
    for source in sorted(step.rglob("*")):
        if source.is_file() and source.name != "step.yaml":
            target = repo / source.relative_to(step)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return meta


def build(dest: Path) -> None:
    keys_dir = dest.with_name(dest.name + ".keys")
    for old in (dest, keys_dir):
        shutil.rmtree(old, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # gpg-agent's socket path must be short: keep the keyring under /tmp.
    with tempfile.TemporaryDirectory(prefix="sluice-demo-") as workdir:
        signers = Signers(Path(workdir))
        try:
            shutil.copytree(DEMO / "main", dest)
            shutil.copytree(
                POLICIES, dest / "policies", ignore=shutil.ignore_patterns("*_test.rego")
            )
            run("git", "init", "-q", "-b", "main", str(dest))
            when = 1_767_225_600  # 2026-01-01, so the history reads the same every build
            commit(dest, signers, "trusted-gpg", "Initial GitOps layout", when)
            run("git", "checkout", "-q", "-b", "feature", cwd=dest)
            for step in sorted(p for p in (DEMO / "steps").iterdir() if p.is_dir()):
                meta = apply_step(dest, step)
                when += 3600
                commit(dest, signers, meta["signer"], meta["message"], when)
            run("git", "checkout", "-q", "main", cwd=dest)
            signers.write_trusted_keys(keys_dir)
        finally:
            signers.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    dest = Path(argv[1]).resolve()
    build(dest)
    print(f"demo repo: {dest} (branches main, feature); trusted keys: {dest}.keys")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

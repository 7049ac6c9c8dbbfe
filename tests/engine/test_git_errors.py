"""Git's error lines quoted in comments and exceptions never carry a remote's credentials."""

from __future__ import annotations

import subprocess

from bot.gitops import git_error_line

TOKEN = "ghs_s3cretT0ken"


def test_a_failed_push_to_a_url_with_credentials_names_the_host_only(tmp_path):
    url = f"https://x-access-token:{TOKEN}@127.0.0.1:9/acme/deploy.git"
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    proc = subprocess.run(
        ["git", "-C", str(tmp_path), "ls-remote", url],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0", "HOME": str(tmp_path)},
        timeout=30,
    )
    assert proc.returncode != 0
    line = git_error_line(proc, url)
    assert TOKEN not in line and "x-access-token" not in line
    assert line  # git's own reason, not an empty message


def test_credentials_quoted_by_git_or_a_helper_are_masked():
    url = f"https://x-access-token:{TOKEN}@forge.example/acme/deploy.git"
    stderr = f"fatal: unable to access '{url}/': The requested URL returned error: 403\n"
    proc = subprocess.CompletedProcess(["git"], 128, b"", stderr.encode())
    line = git_error_line(proc, url)
    assert TOKEN not in line and "x-access-token" not in line
    assert "https://forge.example/acme/deploy.git" in line and "403" in line


def test_the_last_line_is_kept_and_an_empty_stderr_names_the_exit_status():
    proc = subprocess.CompletedProcess(["git"], 128, b"", b"hint: a\nfatal: no such ref\n")
    assert git_error_line(proc) == "fatal: no such ref"
    silent = subprocess.CompletedProcess(["git"], 1, b"", b"")
    assert git_error_line(silent) == "exit status 1"

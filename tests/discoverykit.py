"""Git repositories shaped like real Argo CD and Flux repos, built inside a test."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from bot.models import Report
from bot.preview import PreviewOptions, run_preview

REPO_URL = "https://github.com/acme/fleet.git"


class GitRepo:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.root), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    def write(self, files: dict[str, str]) -> None:
        for rel, text in files.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"))

    def remove(self, rel: str) -> None:
        self.git("rm", "-q", "-r", rel)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def preview(
        self, base: str, head: str, cache: Path, *, all_apps: bool = False, repo_urls=()
    ) -> Report:
        options = PreviewOptions(
            cache_dir=cache, workers=2, all_apps=all_apps, repo_urls=tuple(repo_urls)
        )
        return run_preview(self.root, base, head, options)


def by_name(report: Report) -> dict:
    return {app.name: app for app in report.apps}


def index(objects: list[dict]) -> dict[tuple[str, str | None, str], dict]:
    return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}

"""A real preview marks each violation new or already on the base, and names the
commits whose signatures fail with their subject and author."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.preview import PreviewOptions, run_preview
from bot.report import render_markdown

ROOT = Path(__file__).resolve().parents[2]
BUILDER = ROOT / "examples" / "build_demo_repo.py"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("demo") / "repo"
    subprocess.run([sys.executable, str(BUILDER), str(dest)], check=True, capture_output=True)
    return dest


def violations(report, app: str) -> dict[str, bool | None]:
    found = next(a for a in report.apps if a.name == app)
    return {v.rule: v.new for v in found.policy.violations if v.severity == "deny"}


def test_a_deny_the_pr_brings_is_new_and_one_on_the_base_is_existing(demo, tmp_path) -> None:
    options = PreviewOptions(cache_dir=tmp_path / "cache", keys_dir=Path(f"{demo}.keys"))
    brought = run_preview(demo, "main", "feature", options)
    assert violations(brought, "web-prod") == {"deny_latest_tag": True}

    # A follow-up PR on top of the deny that changes only the Service: the deny is
    # still there (the gate still fails) but it is the base's, not this PR's.
    git(demo, "checkout", "-q", "-b", "followup", "feature")
    service = demo / "apps/web/base/service.yaml"
    service.write_text(service.read_text().replace("port: 80", "port: 8080"))
    git(demo, "commit", "-qam", "web: move the service port")
    followup = run_preview(demo, "feature", "followup", options)
    assert violations(followup, "web-prod") == {"deny_latest_tag": False}
    assert followup.verdict == "fail", "which denies fail the gate does not change"
    md = render_markdown(followup)
    assert "| `deny_latest_tag` | `Deployment web/web` |" in md.replace("`web-prod` | ", "")
    assert "existing on base |" in md


def test_bad_signatures_name_subject_and_author(demo, tmp_path) -> None:
    options = PreviewOptions(cache_dir=tmp_path / "cache", keys_dir=Path(f"{demo}.keys"))
    report = run_preview(demo, "main", "feature", options)
    bad = [c for c in report.signatures.commits if c.status != "valid"]
    assert bad and all(c.subject and "<" in c.author for c in bad)
    md = render_markdown(report)
    for c in bad:
        assert f"| `{c.sha[:7]}` | " in md
    untrusted = next(c for c in bad if c.status == "untrusted")
    assert untrusted.fingerprint and f"`{untrusted.fingerprint}`" in md

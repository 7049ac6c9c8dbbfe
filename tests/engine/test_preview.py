"""`sluice preview` end to end on the demo repository: real git, gpg, ssh, kustomize, helm, Rego."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILDER = ROOT / "examples" / "build_demo_repo.py"
SECRET_VALUES = [
    "s3cr3t-db-password-v1",
    "s3cr3t-db-password-v2",
    "queue-token-aaaa",
    "demo-api-key-7f3a9c",
    "czNjcjN0LWRiLXBhc3N3b3JkLXYx",
    "czNjcjN0LWRiLXBhc3N3b3JkLXYy",
    "cXVldWUtdG9rZW4tYWFhYQ==",
]


def sluice(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def preview(repo: Path, base: str, head: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``sluice preview`` of ``base..head`` in ``repo``, with ``extra`` options."""
    return sluice("preview", "--repo", str(repo), "--base", base, "--head", head, *extra)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("demo") / "repo"
    subprocess.run([sys.executable, str(BUILDER), str(dest)], check=True, capture_output=True)
    return dest


@pytest.fixture(scope="module")
def demo_json(demo: Path) -> tuple[dict, subprocess.CompletedProcess[str]]:
    keys = f"{demo}.keys"
    proc = preview(demo, "main", "feature", "--keys", keys, "--format", "json")
    return json.loads(proc.stdout), proc


def apps_by_name(report: dict) -> dict[str, dict]:
    return {app["name"]: app for app in report["apps"]}


def test_demo_report_covers_every_renderer_and_app_lifecycle(demo_json) -> None:
    report, proc = demo_json
    assert proc.returncode == 1, proc.stderr
    apps = apps_by_name(report)
    assert {name: app["status"] for name, app in apps.items()} == {
        "api": "changed",
        "cache": "added",
        "legacy": "removed",
        "web-prod": "changed",
        "web-staging": "changed",
        "worker": "changed",
    }
    assert apps["api"]["renderer"] == "helm"
    assert apps["web-prod"]["renderer"] == "kustomize"
    assert apps["worker"]["renderer"] == "plain"
    assert [c["action"] for c in apps["legacy"]["changes"]] == ["delete"]
    assert [c["action"] for c in apps["cache"]["changes"]] == ["create"]
    (api_change,) = apps["api"]["changes"]
    assert "-  replicas: 2" in api_change["diff"] and "+  replicas: 3" in api_change["diff"]


def test_demo_report_shows_policy_deny_and_warn(demo_json) -> None:
    report, _ = demo_json
    apps = apps_by_name(report)
    assert report["verdict"] == "fail"
    for name in ("web-prod", "web-staging"):
        assert apps[name]["policy"]["verdict"] == "fail"
        rules = {v["rule"] for v in apps[name]["policy"]["violations"]}
        assert "deny_latest_tag" in rules
    assert apps["cache"]["policy"]["verdict"] == "warn"
    assert {v["severity"] for v in apps["cache"]["policy"]["violations"]} == {"warn"}
    assert apps["api"]["policy"]["verdict"] == "pass"


def test_demo_signatures_valid_unsigned_untrusted(demo_json, demo: Path) -> None:
    report, _ = demo_json
    commits = report["signatures"]["commits"]
    expected = git(demo, "rev-list", "--reverse", "main..feature").split()
    assert [c["sha"] for c in commits] == expected
    assert [(c["status"], c["method"]) for c in commits] == [
        ("valid", "ssh"),
        ("unsigned", "none"),
        ("untrusted", "gpg"),
    ]
    assert report["signatures"]["verdict"] == "fail"


def test_secret_rotation_shows_fingerprints_never_values(demo: Path, demo_json) -> None:
    report, _ = demo_json
    markdown = preview(demo, "main", "feature", "--keys", f"{demo}.keys").stdout
    for output in (json.dumps(report), markdown):
        for value in SECRET_VALUES:
            assert value not in output
    (secret,) = apps_by_name(report)["worker"]["changes"]
    diff = secret["diff"]
    changed = [line for line in diff.splitlines() if "DB_PASSWORD" in line]
    assert len(changed) == 2 and changed[0][0] == "-" and changed[1][0] == "+"
    assert changed[0].split("sha:")[1] != changed[1].split("sha:")[1]
    unchanged = [line for line in diff.splitlines() if "QUEUE_TOKEN" in line]
    assert len(unchanged) == 1 and unchanged[0].startswith(" ")
    assert any(line.startswith("+") and "API_KEY" in line for line in diff.splitlines())


def test_markdown_report_is_the_pr_comment(demo: Path) -> None:
    proc = preview(demo, "main", "feature", "--keys", f"{demo}.keys")
    assert proc.returncode == 1
    body = proc.stdout
    assert body.startswith("<!-- sluice:report -->")
    assert "deny_latest_tag" in body
    assert body.count("<details>") == body.count("</details>")
    assert body.count("```") % 2 == 0


def test_pr_head_cannot_weaken_its_own_gate(demo: Path, demo_json, tmp_path: Path) -> None:
    """Deleting the policy, turning signatures off and adding keys in the PR change nothing."""
    repo = tmp_path / "repo"
    shutil.copytree(demo, repo)
    git(repo, "checkout", "-q", "-b", "weaken", "feature")
    (repo / "policies" / "images.rego").unlink()
    config = repo / ".sluice.yaml"
    config.write_text(config.read_text().replace("mode: all", "mode: off"))
    keys = repo / "keys"
    keys.mkdir()
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env_gpg = ["gpg", "--homedir", str(home), "--batch", "--passphrase", ""]
    subprocess.run(
        [*env_gpg, "--quick-gen-key", "x <x@x>", "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
    )
    exported = subprocess.run(
        [*env_gpg, "--armor", "--export", "x@x"], check=True, capture_output=True
    ).stdout
    (keys / "attacker.asc").write_bytes(exported)
    git(repo, "add", "-A")
    git(repo, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "weaken the gate")
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)

    proc = preview(repo, "main", "weaken", "--keys", f"{demo}.keys", "--format", "json")
    weakened = json.loads(proc.stdout)
    original, _ = demo_json
    assert proc.returncode == 1
    assert weakened["verdict"] == "fail"
    for name in ("web-prod", "web-staging"):
        assert apps_by_name(weakened)[name]["policy"] == apps_by_name(original)[name]["policy"]
    assert weakened["signatures"]["verdict"] == "fail"
    statuses = [c["status"] for c in weakened["signatures"]["commits"]]
    assert statuses == ["valid", "unsigned", "untrusted", "unsigned"]


def test_all_renders_unaffected_apps_too(demo: Path) -> None:
    git(demo, "branch", "-f", "tweak", "main")
    proc = preview(demo, "main", "tweak", "--format", "json", "--all")
    report = json.loads(proc.stdout)
    assert {a["name"] for a in report["apps"]} == {
        "api",
        "legacy",
        "web-prod",
        "web-staging",
        "worker",
    }
    assert {a["status"] for a in report["apps"]} == {"unchanged"}
    narrow = json.loads(preview(demo, "main", "tweak", "--format", "json").stdout)
    assert narrow["apps"] == []


def test_clean_change_passes_with_exit_zero(demo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(demo, repo)
    git(repo, "checkout", "-q", "-b", "scale", "main")
    values = repo / "apps" / "api" / "values-prod.yaml"
    values.write_text("replicaCount: 5\n")
    git(repo, "-c", "commit.gpgsign=false", "commit", "-q", "-am", "scale api")
    config = repo / ".sluice.yaml"
    assert "mode: all" in config.read_text()
    # Signatures are part of the gate: unsigned fails, so check policy + render only.
    proc = preview(repo, "main", "scale", "--format", "json")
    report = json.loads(proc.stdout)
    assert [a["name"] for a in report["apps"]] == ["api"]
    assert report["apps"][0]["policy"]["verdict"] == "pass"
    assert report["signatures"]["commits"][0]["status"] == "unsigned"
    assert proc.returncode == 1

    config.write_text(config.read_text().replace("mode: all", "mode: off"))
    git(repo, "-c", "commit.gpgsign=false", "commit", "-q", "-am", "signatures off")
    git(repo, "checkout", "-q", "-b", "scale2")
    values.write_text("replicaCount: 6\n")
    git(repo, "-c", "commit.gpgsign=false", "commit", "-q", "-am", "scale api again")
    proc = preview(repo, "scale", "scale2", "--format", "json")
    report = json.loads(proc.stdout)
    assert report["verdict"] == "pass", report
    assert report["signatures"]["verdict"] == "skipped"
    assert proc.returncode == 0


def test_broken_base_config_fails_closed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".sluice.yaml").write_text("apps:\n  - name: Bad Name\n    path: x\n")
    git(repo, "add", "-A")
    git(repo, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "broken")
    proc = preview(repo, "main", "main", "--format", "json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert report["verdict"] == "fail"
    assert any("apps[0]" in e and "name" in e for e in report["errors"])


def test_usage_errors_exit_two(demo: Path, tmp_path: Path) -> None:
    unknown_ref = preview(demo, "main", "nope")
    assert unknown_ref.returncode == 2
    assert "nope" in unknown_ref.stderr
    missing_arg = sluice("preview", "--repo", str(demo))
    assert missing_arg.returncode == 2
    bad_keys = preview(
        demo,
        "main",
        "feature",
        "--keys",
        str(tmp_path / "absent"),
    )
    assert bad_keys.returncode == 2 and "--keys" in bad_keys.stderr


def test_render_command_prints_objects(demo: Path) -> None:
    proc = sluice("render", "--repo", str(demo), "--ref", "feature", "--app", "web-prod")
    assert proc.returncode == 0, proc.stderr
    assert "kind: Deployment" in proc.stdout and "replicas: 4" in proc.stdout
    unknown = sluice("render", "--repo", str(demo), "--ref", "feature", "--app", "nope")
    assert unknown.returncode == 2


def test_policy_test_command_runs_the_default_library() -> None:
    proc = sluice("policy", "test", str(ROOT / "policies"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed, total = proc.stdout.strip().splitlines()[-1].removeprefix("PASS: ").split("/")
    assert passed == total and int(total) >= 20  # every rule has tests, and all ran


def test_policy_test_command_reports_failures(tmp_path: Path) -> None:
    (tmp_path / "x_test.rego").write_text(
        "package main\nimport rego.v1\ntest_always_false if { 1 == 2 }\n"
    )
    proc = sluice("policy", "test", str(tmp_path))
    assert proc.returncode == 1
    assert "test_always_false" in proc.stdout


def test_three_policy_backends_agree_on_the_demo_repo(demo: Path, tmp_path: Path) -> None:
    from bot.preview import PreviewOptions, run_preview
    from tests.emulators.opa import OpaEmulator

    opa = OpaEmulator(token="opa-demo-token").start()
    try:
        verdicts = {}
        for backend in ("regorus", "regopy", "opa"):
            options = PreviewOptions(
                policy_backend=backend,
                opa_url=opa.url,
                opa_token="opa-demo-token",
                cache_dir=tmp_path / "cache",
            )
            report = run_preview(demo, "main", "feature", options)
            verdicts[backend] = {
                app.name: (
                    app.policy.verdict,
                    sorted(
                        (v.severity, v.rule, v.kind, v.name, v.msg) for v in app.policy.violations
                    ),
                )
                for app in report.apps
            }
    finally:
        opa.stop()
    assert verdicts["regorus"]["web-prod"][0] == "fail"
    assert verdicts["regopy"] == verdicts["regorus"]
    assert verdicts["opa"] == verdicts["regorus"]


def test_malformed_trusted_key_is_a_usage_error(demo: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "broken.asc").write_text("this is not a key\n")
    proc = preview(demo, "main", "feature", "--keys", str(keys))
    assert proc.returncode == 2
    assert "broken.asc" in proc.stderr and "Traceback" not in proc.stderr

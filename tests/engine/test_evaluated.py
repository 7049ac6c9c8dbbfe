"""Once per object: normalized once for diff and policy, policy evaluated once per content."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.app_report import PolicyPool
from bot.evaluated import NormalizedRenders, PolicyResults
from bot.models import App, PolicyResult, RenderedApp, Violation
from bot.preview import PreviewOptions, run_preview

ROOT = Path(__file__).resolve().parents[2]
CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
DENY = PolicyResult(
    verdict="fail",
    violations=[Violation("deny", "no_c", "c is not allowed", "ConfigMap", "x", "c")],
)


def test_a_render_is_normalized_once() -> None:
    rendered = RenderedApp(App(name="a", path="a", namespace="x"), "plain", objects=[CM])
    normal = NormalizedRenders()
    first = normal.of(rendered)
    assert normal.of(rendered) is first
    assert first[0]["metadata"]["namespace"] == "x"


def test_policy_results_are_reused_only_for_the_same_input(tmp_path: Path) -> None:
    calls: list[str] = []

    def evaluate(label: str, result: PolicyResult = DENY):
        return lambda: calls.append(label) or result

    meta = {"name": "a", "path": "a", "namespace": "x"}
    results = PolicyResults(tmp_path, "regorus", "main", {"p.rego": "package main"})
    assert results.get_or_evaluate([CM], meta, evaluate("first")) == DENY
    assert results.get_or_evaluate([CM], meta, evaluate("again")) == DENY  # from disk
    changed = {**CM, "data": {"a": "2"}}
    results.get_or_evaluate([changed], meta, evaluate("other objects"))
    results.get_or_evaluate([CM], {**meta, "namespace": "y"}, evaluate("other namespace"))
    other_policy = PolicyResults(tmp_path, "regorus", "main", {"p.rego": "package main\n"})
    other_policy.get_or_evaluate([CM], meta, evaluate("other policy"))
    failed = PolicyResult(verdict="error", error="engine down")
    results.get_or_evaluate([changed], {**meta, "name": "b"}, evaluate("error", failed))
    results.get_or_evaluate([changed], {**meta, "name": "b"}, evaluate("error again", failed))
    assert calls == [
        "first",
        "other objects",
        "other namespace",
        "other policy",
        "error",
        "error again",
    ]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("demo") / "repo"
    builder = ROOT / "examples" / "build_demo_repo.py"
    subprocess.run([sys.executable, str(builder), str(dest)], check=True, capture_output=True)
    return dest


def test_a_cached_base_is_not_evaluated_again(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluated: list[str] = []
    run = PolicyPool._run

    def counted(self, objects, meta):
        evaluated.append(meta["name"])
        return run(self, objects, meta)

    monkeypatch.setattr(PolicyPool, "_run", counted)
    options = PreviewOptions(cache_dir=tmp_path / "cache")
    first = run_preview(demo, "main", "feature", options)
    assert evaluated, "the first preview evaluates policy"
    evaluated.clear()
    second = run_preview(demo, "main", "feature", options)
    assert evaluated == []  # same renders, same policies: every result from the cache
    assert second.to_dict() == first.to_dict()  # including which violations are new
    marks = {v.new for a in first.apps if a.policy for v in a.policy.violations}
    assert marks - {None}, "violations are marked new or existing"


def test_an_unchanged_app_is_evaluated_once(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluated: list[str] = []
    run = PolicyPool._run

    def counted(self, objects, meta):
        evaluated.append(meta["name"])
        return run(self, objects, meta)

    monkeypatch.setattr(PolicyPool, "_run", counted)
    options = PreviewOptions(cache_dir=tmp_path / "cache", all_apps=True)
    report = run_preview(demo, "main", "main", options)  # --all of a PR that changes nothing
    unchanged = [a.name for a in report.apps if a.status == "unchanged" and a.policy]
    assert len(unchanged) >= 3
    assert sorted(evaluated) == sorted(unchanged)  # once each, not once per side

"""bot.policy: conventions, isolation of engine failures, backends agree, OPA fail-closed."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from bot.policy import make_engine, policy_sources, run_policy_tests
from bot.policy.engine import EmbeddedEngine
from tests.emulators.opa import OpaEmulator

REPO = Path(__file__).resolve().parents[2]
LIBRARY = {f"policies/{p.name}": p.read_text() for p in sorted((REPO / "policies").glob("*.rego"))}
APP = {"name": "web-prod", "path": "apps/web", "namespace": "web"}
LABELS = {"app.kubernetes.io/name": "web", "app.kubernetes.io/instance": "web-prod"}


def deployment(name="web", image="nginx:1.25", api_version="apps/v1", **pod):
    container = {
        "name": "app",
        "image": image,
        "securityContext": {"runAsNonRoot": True},
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
    }
    return {
        "apiVersion": api_version,
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "web", "labels": dict(LABELS)},
        "spec": {"template": {"spec": {"containers": [container], **pod}}},
    }


SAMPLES = [
    deployment("good"),
    deployment("latest", image="nginx:latest"),
    deployment("untagged", image="registry:5000/team/nginx"),
    deployment("old", api_version="extensions/v1beta1"),
    deployment("hostnet", hostNetwork=True, hostPID=True),
    deployment("hostpath", volumes=[{"name": "h", "hostPath": {"path": "/var/run"}}]),
    {
        "apiVersion": "batch/v1beta1",
        "kind": "CronJob",
        "metadata": {"name": "cron", "namespace": "web"},
        "spec": {
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "c",
                                    "image": "busybox",
                                    "securityContext": {"privileged": True},
                                }
                            ]
                        }
                    }
                }
            }
        },
    },
    {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ep", "labels": LABELS}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "web"}},
]


@pytest.fixture
def opa():
    emulator = OpaEmulator(token="opa-test-token").start()
    yield emulator
    emulator.stop()


def evaluate(source, objects, backend="regorus", **kwargs):
    with make_engine(backend, {"policies/p.rego": source}, **kwargs) as engine:
        return engine.evaluate(objects, APP)


def keyed(result):
    return sorted((v.severity, v.rule, v.kind, v.name, v.msg) for v in result.violations)


CONVENTIONS = """
package main
import rego.v1
deny contains "plain deny" if input.kind == "Pod"
violation contains {"msg": "object violation", "details": {"x": 1}} if input.kind == "Pod"
warn_ports contains msg if { input.kind == "Service"; msg := "service warns" }
denylist contains "not a gate rule" if true
"""


@pytest.mark.parametrize("backend", ["regorus", "regopy"])
def test_conventions_deny_violation_warn(backend):
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "n"}}
    svc = {"kind": "Service", "metadata": {"name": "s"}}
    result = evaluate(CONVENTIONS, [pod, svc], backend)
    assert result.verdict == "fail"
    assert keyed(result) == [
        ("deny", "deny", "Pod", "p", "plain deny"),
        ("deny", "violation", "Pod", "p", "object violation"),
        ("warn", "warn_ports", "Service", "s", "service warns"),
    ]
    assert result.violations[0].namespace == "n"
    assert evaluate(CONVENTIONS, [svc], backend).verdict == "warn"
    assert evaluate(CONVENTIONS, [{"kind": "ConfigMap"}], backend).verdict == "pass"


@pytest.mark.parametrize("backend", ["regorus", "regopy"])
def test_exceptions_exempt_named_rules_only(backend):
    source = """
package main
import rego.v1
deny_latest_tag contains "latest" if input.image == "x:latest"
warn_no_owner contains "owner" if not input.owner
exception contains rules if { input.metadata.name == "legacy"; rules := ["latest_tag"] }
"""
    legacy = {"kind": "Pod", "metadata": {"name": "legacy"}, "image": "x:latest"}
    other = {"kind": "Pod", "metadata": {"name": "new"}, "image": "x:latest"}
    result = evaluate(source, [legacy, other], backend)
    assert keyed(result) == [
        ("deny", "deny_latest_tag", "Pod", "new", "latest"),
        ("warn", "warn_no_owner", "Pod", "legacy", "owner"),
        ("warn", "warn_no_owner", "Pod", "new", "owner"),
    ]


@pytest.mark.parametrize("backend", ["regorus", "regopy"])
def test_rules_see_the_whole_app(backend):
    source = """
package main
import rego.v1
deny_missing_service contains msg if {
    input.kind == "Deployment"
    not service_for(input.metadata.name)
    msg := sprintf("no Service for %s in app %s", [input.metadata.name, data.sluice.app.name])
}
service_for(name) if { some o in data.sluice.objects; o.kind == "Service"; o.metadata.name == name }
"""
    web = {"kind": "Deployment", "metadata": {"name": "web"}}
    api = {"kind": "Deployment", "metadata": {"name": "api"}}
    svc = {"kind": "Service", "metadata": {"name": "web"}}
    result = evaluate(source, [web, api, svc], backend)
    assert keyed(result) == [
        ("deny", "deny_missing_service", "Deployment", "api", "no Service for api in app web-prod")
    ]


@pytest.mark.parametrize("backend", ["regorus", "regopy"])
def test_boolean_rules_count_only_when_true(backend):
    source = """
package main
import rego.v1
deny_pod if input.kind == "Pod"
warn_service := true if input.kind == "Service"
deny_never := false
"""
    pod = {"kind": "Pod", "metadata": {"name": "p"}}
    svc = {"kind": "Service", "metadata": {"name": "s"}}
    cm = {"kind": "ConfigMap", "metadata": {"name": "c"}}
    result = evaluate(source, [pod, svc, cm], backend)
    assert keyed(result) == [
        ("deny", "deny_pod", "Pod", "p", "deny_pod"),
        ("warn", "warn_service", "Service", "s", "warn_service"),
    ]


@pytest.mark.parametrize("backend", ["regorus", "regopy"])
def test_messages_survive_the_worker_verbatim(backend):
    source = r"""
package main
import rego.v1
deny contains sprintf("%s: line one\n  \"quoted\"  é ✓", [input.metadata.name]) if input.kind == "Pod"
"""
    pods = [{"kind": "Pod", "metadata": {"name": f"p{i}"}} for i in range(3)]
    result = evaluate(source, [*pods, {"kind": "ConfigMap", "metadata": {"name": "c"}}], backend)
    assert [v.msg for v in result.violations] == [
        f'p{i}: line one\n  "quoted"  é ✓' for i in range(3)
    ]


def test_malformed_rule_value_is_an_error():
    source = 'package main\nimport rego.v1\ndeny contains {"message": "no msg key"} if true\n'
    result = evaluate(source, [{"kind": "Pod", "metadata": {"name": "p"}}])
    assert result.verdict == "error"
    assert "deny" in result.error and "msg" in result.error


@pytest.mark.parametrize("backend", ["regorus", "regopy"])
def test_compile_error_is_an_error_verdict_naming_the_file(backend):
    result = evaluate("package main\ndeny contains msg if {\n", [deployment()], backend)
    assert result.verdict == "error"
    assert "policies/p.rego" in result.error
    assert result.violations == []


def test_empty_policy_set_passes_and_test_files_do_not_gate():
    with make_engine("regorus", {}) as engine:
        assert engine.evaluate([deployment()], APP).verdict == "pass"
    only_tests = {"policies/x_test.rego": "package main\ndeny contains 1 if true\n"}
    with make_engine("regorus", only_tests) as engine:
        assert engine.evaluate([deployment()], APP).verdict == "pass"
    assert set(policy_sources(LIBRARY)) == {p for p in LIBRARY if not p.endswith("_test.rego")}


def test_wrong_package_fails_closed():
    result = evaluate("package k8s\ndeny contains 1 if true\n", [deployment()])
    assert result.verdict == "error"
    assert "package main" in result.error and "k8s" in result.error
    other = evaluate(
        'package k8s\nimport rego.v1\ndeny contains "x" if true\n', [{}], package="k8s"
    )
    assert other.verdict == "fail"


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown policy backend"):
        make_engine("conftest", {})
    with pytest.raises(ValueError, match="invalid Rego package"):
        make_engine("regorus", {}, package="main; rm")
    with pytest.raises(ValueError, match="opa_url"):
        make_engine("opa", {})


PANIC = """
package main
import rego.v1
deny contains msg if { input.kind == "Boom"; msg := sprintf("%d", [strings.count("aaa", "")]) }
deny contains "latest" if input.image == "x:latest"
"""


def test_regorus_panic_is_a_failed_gate_and_engine_recovers():
    boom = {"kind": "Boom", "metadata": {"name": "b"}}
    with make_engine("regorus", {"policies/p.rego": PANIC}) as engine:
        result = engine.evaluate([boom], APP)
        assert result.verdict == "error"
        assert "panic" in result.error
        after = engine.evaluate([{"kind": "Pod", "image": "x:latest"}], APP)
        assert after.verdict == "fail"


def test_regopy_hang_times_out_and_engine_recovers():
    source = """
package main
import rego.v1
deny contains msg if { input.kind == "Hang"; msg := strings.replace_n({"": "x"}, "abc") }
deny contains "latest" if input.image == "x:latest"
"""
    with make_engine("regopy", {"policies/p.rego": source}, timeout_s=2) as engine:
        started = time.monotonic()
        result = engine.evaluate([{"kind": "Hang"}], APP)
        assert result.verdict == "error"
        assert "timed out" in result.error
        assert time.monotonic() - started < 6
        assert engine.evaluate([{"kind": "Pod", "image": "x:latest"}], APP).verdict == "fail"


def test_killed_worker_is_a_failed_gate_and_restarts():
    source = 'package main\nimport rego.v1\ndeny contains "slow" if { input.kind == "Slow"; count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000)]) > 0 }\n'
    with make_engine("regorus", {"policies/p.rego": source}, timeout_s=30) as engine:
        assert isinstance(engine, EmbeddedEngine)
        pid = engine._worker.pid
        threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
        result = engine.evaluate([{"kind": "Slow"}] * 50, APP)
        assert result.verdict == "error"
        assert "crashed" in result.error and "SIGKILL" in result.error
        assert engine.evaluate([{"kind": "Pod"}], APP).verdict == "pass"
        assert engine._worker.pid != pid


def test_builtin_error_names_the_object():
    source = 'package main\nimport rego.v1\ndeny contains msg if { msg := sprintf("%v", [1 / input.n]) }\n'
    objects = [
        {"kind": "A", "metadata": {"name": "ok"}, "n": 1},
        {"kind": "B", "metadata": {"name": "zero"}, "n": 0},
    ]
    result = evaluate(source, objects)
    assert result.verdict == "error"
    assert result.error.startswith("B zero:")


def test_library_verdicts_identical_on_three_backends(opa):
    expected = {
        ("deny", "deny_latest_tag", "latest"),
        ("deny", "deny_latest_tag", "untagged"),
        ("deny", "deny_latest_tag", "cron"),
        ("deny", "deny_removed_api", "old"),
        ("deny", "deny_removed_api", "cron"),
        ("deny", "deny_host_network", "hostnet"),
        ("deny", "deny_host_pid", "hostnet"),
        ("deny", "deny_host_path", "hostpath"),
        ("deny", "deny_privileged", "cron"),
        ("deny", "deny_run_as_root", "cron"),
        ("warn", "warn_missing_limits", "cron"),
        ("warn", "warn_missing_labels", "cron"),
        ("warn", "warn_missing_labels", "cfg"),
        ("warn", "warn_deprecated_api", "ep"),
    }
    results = {}
    for backend in ("regorus", "regopy", "opa"):
        with make_engine(backend, LIBRARY, opa_url=opa.url, opa_token="opa-test-token") as engine:
            results[backend] = engine.evaluate(SAMPLES, APP)
    assert results["regorus"].verdict == "fail"
    assert {(v.severity, v.rule, v.name) for v in results["regorus"].violations} == expected
    assert keyed(results["regopy"]) == keyed(results["regorus"])
    assert keyed(results["opa"]) == keyed(results["regorus"])
    assert opa.policies == {}  # close() removed what it uploaded


def test_opa_compile_error_names_the_file(opa):
    with make_engine(
        "opa",
        {"policies/bad.rego": "package main\ndeny contains x if {\n"},
        opa_url=opa.url,
        opa_token="opa-test-token",
    ) as engine:
        result = engine.evaluate([deployment()], APP)
    assert result.verdict == "error"
    assert "policies/bad.rego" in result.error


def test_opa_5xx_dropped_connection_and_slowness_fail_closed(opa):
    with make_engine(
        "opa", LIBRARY, opa_url=opa.url, opa_token="opa-test-token", timeout_s=1
    ) as engine:
        assert engine.evaluate([deployment()], APP).verdict == "pass"
        opa.fail_next(1, status=503)
        result = engine.evaluate([deployment()], APP)
        assert result.verdict == "error" and "503" in result.error
        opa.drop_next(1)
        assert engine.evaluate([deployment()], APP).verdict == "error"
        opa.latency_s = 2.5
        result = engine.evaluate([deployment()], APP)
        assert result.verdict == "error" and "timed out" in result.error
        opa.latency_s = 0
        recovered = engine.evaluate([deployment(image="x:latest")], APP)
        assert recovered.verdict == "fail", recovered.error
        opa.clear_policies()  # an OPA restart loses API-uploaded policies
        assert engine.evaluate([deployment()], APP).verdict == "error"
        assert engine.evaluate([deployment()], APP).verdict == "pass"  # re-uploaded


def test_opa_down_fails_closed_and_token_stays_secret(opa):
    url = opa.url
    opa.stop()
    with make_engine(
        "opa", LIBRARY, opa_url=url, opa_token="opa-test-token", timeout_s=1
    ) as engine:
        result = engine.evaluate([deployment()], APP)
    assert result.verdict == "error"
    assert "unreachable" in result.error
    assert "opa-test-token" not in result.error


def test_opa_wrong_token_fails_closed(opa):
    with make_engine("opa", LIBRARY, opa_url=opa.url, opa_token="wrong", timeout_s=2) as engine:
        result = engine.evaluate([deployment()], APP)
    assert result.verdict == "error"
    assert "wrong" not in result.error


def test_library_unit_tests_pass_on_regorus():
    summary = run_policy_tests(REPO / "policies", "regorus")
    assert summary.error is None
    assert summary.ok, summary.format()
    assert summary.passed >= 20
    assert "PASS: " in summary.format()


def test_policy_tests_report_failures_and_errors(tmp_path):
    (tmp_path / "p.rego").write_text('package main\nimport rego.v1\ndeny contains "d" if input.x\n')
    (tmp_path / "p_test.rego").write_text(
        "package main\nimport rego.v1\n"
        'test_ok if { count(deny) == 1 with input as {"x": true} }\n'
        'test_wrong if { count(deny) == 2 with input as {"x": true} }\n'
        'test_boom if { strings.count("aaa", "") == 1 }\n'
    )
    summary = run_policy_tests(tmp_path, "regorus")
    status = {r.name: r.status for r in summary.results}
    assert status == {
        "data.main.test_ok": "pass",
        "data.main.test_wrong": "fail",
        "data.main.test_boom": "error",
    }
    assert not summary.ok
    assert "FAIL: 1/3" in summary.format()


def test_policy_tests_on_regopy(tmp_path):
    (tmp_path / "p.rego").write_text('package main\nimport rego.v1\ndeny contains "d" if input.x\n')
    (tmp_path / "p_test.rego").write_text(
        'package main\nimport rego.v1\ntest_ok if { count(deny) == 1 with input as {"x": true} }\n'
    )
    summary = run_policy_tests(tmp_path, "regopy")
    assert summary.ok, summary.format()


def test_library_unit_tests_pass_on_regopy():
    summary = run_policy_tests(REPO / "policies", "regopy")
    assert summary.ok, summary.format()
    assert summary.passed == run_policy_tests(REPO / "policies", "regorus").passed


def test_regopy_policy_tests_keep_strings_fields_and_failures(tmp_path):
    # Tests on regopy read `input` from data (rego-cpp crashes on `with input as`
    # over builtins); strings, comments and fields named input must stay as written.
    (tmp_path / "p.rego").write_text(
        "package main\nimport rego.v1\n"
        "# input is the object\n"
        'deny contains sprintf("input %s", [input.spec.input]) if input.kind == "Pod"\n'
    )
    (tmp_path / "p_test.rego").write_text(
        "package main\nimport rego.v1\n"
        'pod(v) := {"kind": "Pod", "spec": {"input": v}}\n'
        'test_msg if { deny == {"input x"} with input as {"kind": "Pod", "spec": {"input": "x"}} }\n'
        'test_count if { count(deny) == 1 with input as pod("y") }\n'
        'test_wrong if { count(deny) == 0 with input as {"kind": "Pod", "spec": {"input": "z"}} }\n'
        "test_no_input if { not input }\n"
    )
    summary = run_policy_tests(tmp_path, "regopy")
    status = {r.name: r.status for r in summary.results}
    assert status == {
        "data.main.test_msg": "pass",
        "data.main.test_count": "pass",
        "data.main.test_wrong": "fail",
        "data.main.test_no_input": "pass",
    }, summary.format()


def test_policy_tests_bad_directory(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        run_policy_tests(tmp_path / "missing")
    (tmp_path / "bad.rego").write_text("package main\ntest_x if {\n")
    summary = run_policy_tests(tmp_path)
    assert summary.error and "bad.rego" in summary.error

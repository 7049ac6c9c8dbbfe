from __future__ import annotations

import base64
import copy
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from bot.diff import (
    InstallationKeyError,
    ObjectKey,
    diff_objects,
    duplicate_keys,
    fingerprint,
    load_or_create_key,
    mask_secret,
    normalize,
    object_key,
    summarize,
)
from bot.models import AppReport, PolicyResult, Report
from bot.report import render_markdown, to_json

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

PASSWORD = "hunter2-Corr3ct-Horse"
NEW_PASSWORD = "Tr0ub4dor-and-3"
TOKEN = "tok_9f8e7d6c5b4a"


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def forms(value: str) -> list[str]:
    """Every way a value could leak into text: raw, base64, JSON-escaped."""
    return [value, b64(value), b64(value).rstrip("="), json.dumps(value)[1:-1]]


def secret(name: str = "db", *, data=None, string_data=None, **metadata) -> dict:
    obj = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": "web", **metadata},
    }
    if data is not None:
        obj["data"] = {k: b64(v) for k, v in data.items()}
    if string_data is not None:
        obj["stringData"] = dict(string_data)
    return obj


def deployment(name: str = "web", replicas: int = 1, **extra) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "web", **extra},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app"}]}}},
    }


def placeholder(value: str, key: bytes = KEY) -> str:
    return f"<secret sha:{fingerprint(value.encode(), key)}>"


def assert_no_secret(text: str, *values: str) -> None:
    for value in values:
        for form in forms(value):
            assert form not in text, f"secret value leaked as {form!r}"


def rendered_outputs(changes) -> str:
    report = Report(
        base="a" * 40,
        head="b" * 40,
        verdict="pass",
        apps=[
            AppReport("web", "apps/web", "plain", "changed", changes=changes, policy=PolicyResult())
        ],
    )
    return to_json(report) + "\n" + render_markdown(report)


# --- normalization -------------------------------------------------------------------


def test_normalize_drops_server_owned_fields_and_keeps_desired_state():
    obj = deployment(
        labels={"app": "web"},
        annotations={"team": "a"},
        uid="0d5c",
        resourceVersion="42",
        generation=3,
        creationTimestamp="2024-01-01T00:00:00Z",
        selfLink="/apis/apps/v1/x",
        managedFields=[{"manager": "kubectl"}],
    )
    obj["status"] = {"readyReplicas": 1}
    before = copy.deepcopy(obj)

    out = normalize(obj, None)

    assert "status" not in out
    assert out["metadata"] == {
        "annotations": {"team": "a"},
        "labels": {"app": "web"},
        "name": "web",
        "namespace": "web",
    }
    assert out["spec"] == obj["spec"]
    assert obj == before, "normalize must not mutate its input"


def test_normalize_sorts_keys_at_every_level():
    obj = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "c", "labels": {"z": "1", "a": "2"}},
        "data": {"b": "1", "a": "2"},
    }
    out = normalize(obj, "web")
    assert list(out) == ["apiVersion", "data", "kind", "metadata"]
    assert list(out["metadata"]) == ["labels", "name", "namespace"]
    assert list(out["metadata"]["labels"]) == ["a", "z"]


@pytest.mark.parametrize(
    "api_version,kind",
    [("v1", "ConfigMap"), ("apps/v1", "Deployment"), ("example.com/v1", "Widget")],
)
def test_default_namespace_applies_to_namespaced_and_unknown_kinds(api_version, kind):
    out = normalize({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}, "web")
    assert out["metadata"]["namespace"] == "web"


@pytest.mark.parametrize(
    "api_version,kind",
    [
        ("v1", "Namespace"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("storage.k8s.io/v1", "StorageClass"),
        ("cert-manager.io/v1", "ClusterIssuer"),
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
    ],
)
def test_default_namespace_skips_cluster_scoped_kinds(api_version, kind):
    out = normalize({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}, "web")
    assert "namespace" not in out["metadata"]


def test_explicit_namespace_wins_over_default():
    out = normalize(deployment(), "other")
    assert out["metadata"]["namespace"] == "web"


def test_object_key_uses_group_not_version():
    assert object_key(deployment()) == ObjectKey("apps", "Deployment", "web", "web")
    core = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}
    assert object_key(core) == ObjectKey("", "Service", None, "s")


# --- classification ------------------------------------------------------------------


def test_create_update_delete_and_unchanged_are_classified_and_sorted():
    keep = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}, "data": {}}
    gone = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gone"}, "data": {}}
    new = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "new"}, "spec": {}}
    base = [deployment(replicas=1), keep, gone]
    head = [new, keep, deployment(replicas=3)]

    changes = diff_objects(base, head, secret_key=KEY, default_namespace="web")

    assert [(c.action, c.kind, c.name) for c in changes] == [
        ("delete", "ConfigMap", "gone"),
        ("create", "Service", "new"),
        ("update", "Deployment", "web"),
    ]
    update = changes[2]
    assert "-  replicas: 1\n" in update.diff and "+  replicas: 3\n" in update.diff
    assert update.diff.startswith("--- a/Deployment/web/web\n+++ b/Deployment/web/web\n")
    assert changes[0].diff.startswith("--- a/ConfigMap/web/gone\n+++ /dev/null\n")
    assert changes[1].diff.startswith("--- /dev/null\n+++ b/Service/web/new\n")
    assert changes[1].namespace == "web"
    assert summarize(changes) == {"create": 1, "update": 1, "delete": 1}


def test_server_owned_differences_are_not_changes():
    live = deployment(uid="abc", resourceVersion="9")
    live["status"] = {"replicas": 1}
    assert diff_objects([deployment()], [live], secret_key=KEY) == []
    assert summarize([]) == {"create": 0, "update": 0, "delete": 0}


def test_api_version_bump_within_group_is_an_update():
    hpa = {
        "apiVersion": "autoscaling/v2beta2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "web"},
        "spec": {"maxReplicas": 5},
    }
    bumped = {**hpa, "apiVersion": "autoscaling/v2"}

    changes = diff_objects([hpa], [bumped], secret_key=KEY)

    assert len(changes) == 1
    assert changes[0].action == "update"
    assert changes[0].api_version == "autoscaling/v2"
    assert "-apiVersion: autoscaling/v2beta2\n+apiVersion: autoscaling/v2\n" in changes[0].diff


def test_group_move_is_delete_and_create():
    old = {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "i"}}
    new = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"}}
    actions = [c.action for c in diff_objects([old], [new], secret_key=KEY)]
    assert sorted(actions) == ["create", "delete"]


def test_context_controls_unchanged_lines_in_diff():
    base = deployment(replicas=1, labels={f"l{i}": "x" for i in range(10)})
    head = deployment(replicas=2, labels={f"l{i}": "x" for i in range(10)})
    wide = diff_objects([base], [head], secret_key=KEY, context=3)[0].diff
    narrow = diff_objects([base], [head], secret_key=KEY, context=0)[0].diff
    assert len(narrow.splitlines()) == 5  # 2 labels, 1 hunk header, -1 line, +1 line
    assert len(wide.splitlines()) > len(narrow.splitlines())
    with pytest.raises(ValueError, match="context"):
        diff_objects([base], [head], secret_key=KEY, context=-1)


def test_multiline_strings_diff_line_by_line():
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "w"}}
    base = {**cm, "data": {"run.sh": "set -e\necho one\necho two\n"}}
    head = {**cm, "data": {"run.sh": "set -e\necho one\necho three\n"}}
    diff = diff_objects([base], [head], secret_key=KEY)[0].diff
    assert "-    echo two\n+    echo three\n" in diff


def test_duplicate_key_keeps_last_and_is_reported():
    first, last = deployment(replicas=1), deployment(replicas=7)
    changes = diff_objects([], [first, last], secret_key=KEY)
    assert len(changes) == 1 and "replicas: 7" in changes[0].diff
    assert duplicate_keys([first, last, {"kind": "X", "metadata": {"name": "y"}}]) == [
        ObjectKey("apps", "Deployment", "web", "web")
    ]


def test_diff_is_deterministic_regardless_of_input_order():
    objs = [deployment(name=f"d{i}") for i in range(5)]
    a = diff_objects([], objs, secret_key=KEY)
    b = diff_objects([], list(reversed(objs)), secret_key=KEY)
    assert a == b


# --- Secret masking ------------------------------------------------------------------


def test_mask_secret_replaces_every_value_and_keeps_other_fields():
    obj = secret(data={"password": PASSWORD}, string_data={"token": TOKEN}, labels={"a": "b"})
    before = copy.deepcopy(obj)

    masked = mask_secret(obj, KEY)

    assert masked["data"] == {"password": placeholder(PASSWORD)}
    assert masked["stringData"] == {"token": placeholder(TOKEN)}
    assert masked["type"] == "Opaque"
    assert masked["metadata"] == obj["metadata"]
    assert obj == before, "mask_secret must not mutate its input"
    assert_no_secret(json.dumps(masked), PASSWORD, TOKEN)


def test_data_and_string_data_of_the_same_value_fingerprint_equal():
    via_data = mask_secret(secret(data={"p": PASSWORD}), KEY)
    via_string = mask_secret(secret(string_data={"p": PASSWORD}), KEY)
    assert via_data["data"]["p"] == via_string["stringData"]["p"]


def test_fingerprints_distinguish_values_and_installations():
    assert fingerprint(b"a", KEY) != fingerprint(b"b", KEY)
    assert fingerprint(b"a", KEY) == fingerprint(b"a", KEY)
    assert fingerprint(b"a", KEY) != fingerprint(b"a", OTHER_KEY)
    assert len(fingerprint(b"a", KEY)) == 8
    assert mask_secret(secret(data={"p": PASSWORD}), KEY) != mask_secret(
        secret(data={"p": PASSWORD}), OTHER_KEY
    )


def test_secret_unchanged_values_produce_no_change():
    base = [secret(data={"p": PASSWORD})]
    assert diff_objects(base, copy.deepcopy(base), secret_key=KEY) == []


def test_secret_value_change_shows_fingerprints_only():
    changes = diff_objects(
        [secret(data={"p": PASSWORD, "user": "admin"})],
        [secret(data={"p": NEW_PASSWORD, "user": "admin"})],
        secret_key=KEY,
    )
    assert [c.action for c in changes] == ["update"]
    diff = changes[0].diff
    assert f"-  p: {placeholder(PASSWORD)}\n" in diff
    assert f"+  p: {placeholder(NEW_PASSWORD)}\n" in diff
    assert f"   user: {placeholder('admin')}\n" in diff  # unchanged key: context line
    assert_no_secret(rendered_outputs(changes), PASSWORD, NEW_PASSWORD, "admin")


def test_secret_key_added_and_removed():
    changes = diff_objects(
        [secret(data={"old": PASSWORD, "keep": TOKEN})],
        [secret(data={"new": NEW_PASSWORD, "keep": TOKEN})],
        secret_key=KEY,
    )
    diff = changes[0].diff
    assert f"-  old: {placeholder(PASSWORD)}\n" in diff
    assert f"+  new: {placeholder(NEW_PASSWORD)}\n" in diff
    assert f"   keep: {placeholder(TOKEN)}\n" in diff
    assert_no_secret(rendered_outputs(changes), PASSWORD, NEW_PASSWORD, TOKEN)


def test_moving_a_value_from_data_to_string_data_shows_same_fingerprint():
    changes = diff_objects(
        [secret(data={"p": PASSWORD})], [secret(string_data={"p": PASSWORD})], secret_key=KEY
    )
    diff = changes[0].diff
    assert f"-  p: {placeholder(PASSWORD)}\n" in diff and f"+  p: {placeholder(PASSWORD)}\n" in diff
    assert_no_secret(rendered_outputs(changes), PASSWORD)


def test_secret_create_and_delete_never_show_values():
    created = diff_objects([], [secret("a", data={"p": PASSWORD})], secret_key=KEY)
    deleted = diff_objects([secret("b", string_data={"t": TOKEN})], [], secret_key=KEY)
    assert [c.action for c in created + deleted] == ["create", "delete"]
    assert placeholder(PASSWORD) in created[0].diff
    assert placeholder(TOKEN) in deleted[0].diff
    assert_no_secret(rendered_outputs(created + deleted), PASSWORD, TOKEN)


def test_non_base64_data_is_masked_not_shown():
    obj = secret()
    obj["data"] = {"p": "not base64 " + PASSWORD}
    masked = mask_secret(obj, KEY)
    assert masked["data"]["p"].startswith("<secret sha:")
    assert_no_secret(json.dumps(masked), PASSWORD)


def test_malformed_secret_data_is_hidden_whole():
    obj = secret()
    obj["stringData"] = [PASSWORD]
    assert_no_secret(json.dumps(mask_secret(obj, KEY)), PASSWORD)


def test_last_applied_annotation_on_secret_is_masked_inside():
    embedded = secret(data={"p": PASSWORD})
    obj = secret(
        data={"p": PASSWORD}, annotations={LAST_APPLIED: json.dumps(embedded), "team": "db"}
    )

    masked = mask_secret(obj, KEY)

    annotation = json.loads(masked["metadata"]["annotations"][LAST_APPLIED])
    assert annotation["data"] == {"p": placeholder(PASSWORD)}
    assert annotation["metadata"]["name"] == "db"
    assert masked["metadata"]["annotations"]["team"] == "db"
    changes = diff_objects([], [obj], secret_key=KEY)
    assert_no_secret(rendered_outputs(changes), PASSWORD)


def test_unparseable_last_applied_annotation_becomes_a_fingerprint():
    broken = '{"kind": "Secret", "stringData": {"p": "' + PASSWORD  # truncated JSON
    obj = secret(string_data={"p": PASSWORD}, annotations={LAST_APPLIED: broken})
    masked = mask_secret(obj, KEY)
    assert masked["metadata"]["annotations"][LAST_APPLIED].startswith("<secret sha:")
    assert_no_secret(json.dumps(masked), PASSWORD)


def test_secret_copied_into_annotation_of_other_object_is_masked():
    copied = json.dumps(
        {"apiVersion": "v1", "kind": "Secret", "stringData": {"token": TOKEN}, "type": "Opaque"}
    )
    base = deployment(annotations={"note": "plain", LAST_APPLIED: copied})
    head = deployment(replicas=2, annotations={"note": "plain", "backup": copied})

    changes = diff_objects([base], [head], secret_key=KEY)

    assert changes[0].action == "update"
    assert placeholder(TOKEN) in changes[0].diff
    assert "note: plain" in changes[0].diff
    assert_no_secret(rendered_outputs(changes), TOKEN)


def test_unrelated_json_annotations_stay_readable():
    value = '{"rules": [{"host": "example.com"}]}'
    obj = deployment(annotations={"ingress/config": value})
    assert mask_secret(obj, KEY)["metadata"]["annotations"]["ingress/config"] == value


def test_configmap_data_is_not_masked():
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
    assert mask_secret(cm, KEY) == cm


# --- installation key ----------------------------------------------------------------


def test_key_is_created_once_with_mode_0600(tmp_path: Path):
    path = tmp_path / "state" / "fingerprint.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert load_or_create_key(tmp_path / "other.key") != key
    assert sorted(p.name for p in path.parent.iterdir()) == ["fingerprint.key"]


def test_concurrent_key_creation_agrees_on_one_key(tmp_path: Path):
    path = tmp_path / "fingerprint.key"
    barrier = threading.Barrier(8)
    results: list[bytes] = []

    def worker() -> None:
        barrier.wait()
        results.append(load_or_create_key(path))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert os.listdir(tmp_path) == ["fingerprint.key"]


def test_key_file_of_wrong_length_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "fingerprint.key"
    path.write_bytes(b"short-" + PASSWORD.encode())
    with pytest.raises(InstallationKeyError, match="expected 32") as info:
        load_or_create_key(path)
    assert PASSWORD not in str(info.value)


def test_non_mapping_object_is_a_clear_error():
    with pytest.raises(ValueError, match=r"object #1 is a list, not a mapping"):
        diff_objects([], [deployment(), ["not", "an", "object"]], secret_key=KEY)

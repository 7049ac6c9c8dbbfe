"""The puller's apply engine against the Kubernetes API emulator, through the official client."""

from __future__ import annotations

import base64
import copy
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from bot.puller.apply import Applier, ApplyResult
from bot.puller.cluster import RetryPolicy
from bot.puller.inventory import InventoryStore, ObjectRef
from bot.puller.plan import PlanError, plan
from tests.emulators.kube import Fault, KubeEmulator, running

KEY = b"k" * 32
APP = "web"


# -- objects ---------------------------------------------------------------------------


def namespace(name: str, **annotations: str) -> dict:
    meta: dict = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def configmap(name: str, ns: str = "web", data: dict | None = None, wave: int | None = None):
    meta: dict = {"name": name, "namespace": ns}
    if wave is not None:
        meta["annotations"] = {"sluice.dev/wave": str(wave)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {"k": "v"}}


def secret(name: str, ns: str = "web", **values: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def deployment(name: str = "web", ns: str = "web", replicas: int = 2, image: str = "nginx:1.27"):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object"}},
            }
        ],
    },
}


def widget(name: str, ns: str = "web") -> dict:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"size": 3},
    }


def app_objects() -> list[dict]:
    return [
        namespace("web"),
        configmap("settings", data={"mode": "prod"}),
        secret("creds", password="hunter2-very-secret"),
        deployment(),
    ]


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with running() as emulator:
        yield emulator


@pytest.fixture
def api(kube: KubeEmulator) -> Iterator[client.ApiClient]:
    with kube.api_client() as api_client:
        yield api_client


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def applier(api: client.ApiClient, tmp_path: Path, sleeps: Sleeps) -> Applier:
    return Applier(
        api,
        discovery_cache=tmp_path / "discovery.json",
        retry=RetryPolicy(sleep=sleeps),
    )


def inventory(kube: KubeEmulator, app: str = APP) -> set[tuple[str, str | None, str]]:
    stored = kube.get_object("v1", "ConfigMap", f"sluice-inventory-{app}", "sluice-system")
    assert stored is not None, "no inventory ConfigMap"
    return {
        (e["kind"], e["namespace"], e["name"]) for e in json.loads(stored["data"]["inventory.json"])
    }


def applies(kube: KubeEmulator) -> list[str]:
    """Paths of the app's server-side applies (not the inventory's), in request order."""
    return [
        r.path
        for r in kube.requests
        if r.verb == "apply" and not r.dry_run and "sluice-system" not in r.path
    ]


# -- create, no-op, update --------------------------------------------------------------


def test_first_apply_creates_labels_and_records_inventory(kube, applier):
    result = applier.apply(APP, app_objects())

    assert result.ok, result.errors
    assert result.created == [
        "Namespace web",
        "Secret web/creds",
        "ConfigMap web/settings",
        "Deployment web/web",
    ]
    live = kube.get_object("apps/v1", "Deployment", "web", "web")
    assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sluice"
    assert live["metadata"]["labels"]["sluice.dev/app"] == APP
    assert len(live["metadata"]["annotations"]["sluice.dev/applied-hash"]) == 64
    managers = {m["manager"] for m in live["metadata"]["managedFields"]}
    assert managers == {"sluice"}
    assert inventory(kube) == {
        ("Namespace", None, "web"),
        ("ConfigMap", "web", "settings"),
        ("Secret", "web", "creds"),
        ("Deployment", "web", "web"),
    }


def test_noop_cycle_makes_no_write_and_one_list_per_kind(kube, applier):
    applier.apply(APP, app_objects())
    version = kube.resource_version
    kube.reset_calls()

    result = applier.apply(APP, app_objects())

    assert result.ok and result.created == result.updated == result.pruned == []
    assert len(result.unchanged) == 4
    assert kube.write_calls() == 0
    assert kube.resource_version == version
    lists = Counter(r.path for r in kube.requests if r.verb == "list")
    assert lists and max(lists.values()) == 1 and len(lists) == 4
    # Only the inventory ConfigMap is fetched by name.
    gets = [r.path for r in kube.requests if r.verb == "get"]
    assert gets == ["/api/v1/namespaces/sluice-system/configmaps/sluice-inventory-web"]


def test_a_changed_object_is_updated_and_only_it(kube, applier):
    applier.apply(APP, app_objects())
    kube.reset_calls()
    objects = app_objects()
    objects[1]["data"]["mode"] = "canary"

    result = applier.apply(APP, objects)

    assert result.updated == ["ConfigMap web/settings"]
    assert len(result.unchanged) == 3
    assert kube.calls("apply") == Counter({"apply": 1})
    assert kube.get_object("v1", "ConfigMap", "settings", "web")["data"] == {"mode": "canary"}


def test_a_field_removed_from_git_is_removed_live(kube, applier):
    objects = app_objects()
    objects[1]["data"]["extra"] = "1"
    applier.apply(APP, objects)

    applier.apply(APP, app_objects())

    assert kube.get_object("v1", "ConfigMap", "settings", "web")["data"] == {"mode": "prod"}


# -- ordering ----------------------------------------------------------------------------


def test_waves_run_in_ascending_order_namespaces_first_within_a_wave(kube, applier):
    objects = [
        configmap("late", wave=2),
        configmap("default-wave"),
        configmap("early", wave=-1, ns="kube-public"),
        configmap("middle", wave=1),
        namespace("web"),  # wave 0, listed after its ConfigMap
    ]

    result = applier.apply(APP, objects)

    assert result.ok, result.errors
    assert applies(kube) == [
        "/api/v1/namespaces/kube-public/configmaps/early",
        "/api/v1/namespaces/web",
        "/api/v1/namespaces/web/configmaps/default-wave",
        "/api/v1/namespaces/web/configmaps/middle",
        "/api/v1/namespaces/web/configmaps/late",
    ]


def test_a_namespace_the_app_creates_goes_before_its_objects_whatever_the_waves(kube, applier):
    early = configmap("early", ns="fresh", wave=-1)
    objects = [early, namespace("fresh"), configmap("later", ns="fresh", wave=3)]

    result = applier.apply(APP, objects)

    assert result.ok, result.errors
    assert applies(kube) == [
        "/api/v1/namespaces/fresh",
        "/api/v1/namespaces/fresh/configmaps/early",
        "/api/v1/namespaces/fresh/configmaps/later",
    ]
    assert [
        r.path for r in kube.requests if r.status == 404 and "sluice-system" not in r.path
    ] == []
    kube.reset_calls()
    assert applier.apply(APP, objects).ok
    assert kube.write_calls() == 0


def test_argo_cd_sync_waves_order_the_apply_and_sluice_waves_win(kube, applier):
    def argo(name: str, wave: str, **extra: str) -> dict:
        obj = configmap(name)
        obj["metadata"]["annotations"] = {"argocd.argoproj.io/sync-wave": wave, **extra}
        return obj

    objects = [
        argo("second", "5"),
        argo("both", "-10", **{"sluice.dev/wave": "9"}),
        configmap("plain"),
        argo("first", "-2"),
        namespace("web"),
    ]

    assert applier.apply(APP, objects).ok
    assert applies(kube) == [
        "/api/v1/namespaces/web",
        "/api/v1/namespaces/web/configmaps/first",
        "/api/v1/namespaces/web/configmaps/plain",
        "/api/v1/namespaces/web/configmaps/second",
        "/api/v1/namespaces/web/configmaps/both",
    ]
    with pytest.raises(PlanError, match=r"annotation argocd\.argoproj\.io/sync-wave='soon'"):
        plan(APP, [argo("bad", "soon")])


def test_namespace_crd_and_custom_resource_in_one_apply(kube, applier):
    objects = [widget("big"), WIDGET_CRD, namespace("web")]

    result = applier.apply(APP, objects)

    assert result.ok, result.errors
    assert result.created == [
        "Namespace web",
        "CustomResourceDefinition widgets.example.com",
        "Widget web/big",
    ]
    assert kube.get_object("example.com/v1", "Widget", "big", "web")["spec"] == {"size": 3}
    kube.reset_calls()
    again = applier.apply(APP, objects)
    assert len(again.unchanged) == 3 and kube.write_calls() == 0


def test_an_error_in_a_wave_stops_later_waves_but_not_its_neighbours(kube, applier):
    objects = [
        namespace("web"),
        configmap("Bad_Name"),  # rejected by the API server (422)
        configmap("fine"),
        configmap("after", wave=1),
    ]

    result = applier.apply(APP, objects)

    assert not result.ok
    assert result.created == ["Namespace web", "ConfigMap web/fine"]
    assert any(e.startswith("ConfigMap web/Bad_Name: ") and "Invalid" in e for e in result.errors)
    assert any("later waves (1) not applied, 1 objects skipped" in e for e in result.errors)
    assert kube.get_object("v1", "ConfigMap", "after", "web") is None


# -- prune -------------------------------------------------------------------------------


def test_an_object_removed_from_the_render_is_pruned(kube, applier):
    applier.apply(APP, [*app_objects(), configmap("old")])
    kube.reset_calls()

    result = applier.apply(APP, app_objects())

    assert result.ok, result.errors
    assert result.pruned == ["ConfigMap web/old"]
    assert kube.get_object("v1", "ConfigMap", "old", "web") is None
    assert ("ConfigMap", "web", "old") not in inventory(kube)
    assert kube.calls("delete") == Counter({"delete": 1})


def test_an_empty_render_prunes_nothing_and_writes_nothing(kube, applier):
    applier.apply(APP, app_objects())
    kube.reset_calls()

    result = applier.apply(APP, [])

    assert not result.ok and "no objects" in result.errors[0]
    assert kube.write_calls() == 0
    assert kube.get_object("apps/v1", "Deployment", "web", "web") is not None


def test_mass_prune_is_refused_unless_allowed(kube, applier):
    extra = [configmap(f"c{i}") for i in range(4)]
    applier.apply(APP, [namespace("web"), *extra])
    changed = [namespace("web"), configmap("c0", data={"k": "changed"})]

    refused = applier.apply(APP, changed)

    assert not refused.ok
    assert refused.updated == ["ConfigMap web/c0"]  # the apply itself still happened
    assert refused.pruned == []
    assert "prune refused: 3 of 5 inventory objects" in refused.errors[0]
    assert len(kube.list_objects("v1", "ConfigMap", "web")) == 4
    assert {("ConfigMap", "web", f"c{i}") for i in range(4)} <= inventory(kube)

    allowed = applier.apply(APP, changed, allow_mass_prune=True)

    assert allowed.ok, allowed.errors
    assert sorted(allowed.pruned) == ["ConfigMap web/c1", "ConfigMap web/c2", "ConfigMap web/c3"]
    assert [o["metadata"]["name"] for o in kube.list_objects("v1", "ConfigMap", "web")] == ["c0"]


def test_objects_outside_the_inventory_are_never_pruned(kube, applier):
    # Carries this app's labels but was never applied by the puller.
    stray = configmap("stray")
    stray["metadata"]["labels"] = {"sluice.dev/app": APP, "app.kubernetes.io/managed-by": "sluice"}
    kube.seed(stray)
    kube.seed(configmap("unrelated"))
    applier.apply(APP, [namespace("web"), configmap("a"), configmap("b")])

    result = applier.apply(APP, [namespace("web"), configmap("a")])

    assert result.pruned == ["ConfigMap web/b"]
    names = {o["metadata"]["name"] for o in kube.list_objects("v1", "ConfigMap", "web")}
    assert names == {"a", "stray", "unrelated"}


def test_an_object_handed_to_another_app_is_released_not_deleted(kube, api, applier, tmp_path):
    applier.apply("one", [namespace("web"), configmap("a"), configmap("shared")])
    # An operator hands it over (kubectl label --overwrite sluice.dev/app=two).
    meta = {"name": "shared", "namespace": "web", "labels": {"sluice.dev/app": "two"}}
    kubectl_edit(api, tmp_path, "v1", "ConfigMap", {"metadata": meta})
    assert applier.apply("two", [configmap("shared")]).unchanged == []

    result = applier.apply("one", [namespace("web"), configmap("a")])

    assert result.ok and result.pruned == []
    shared = kube.get_object("v1", "ConfigMap", "shared", "web")
    assert shared["metadata"]["labels"]["sluice.dev/app"] == "two"
    assert ("ConfigMap", "web", "shared") not in inventory(kube, "one")


def test_an_object_of_another_sluice_app_is_not_taken_over(kube, applier):
    applier.apply("one", [namespace("web"), configmap("mine")])

    result = applier.apply("two", [configmap("mine", data={"k": "theirs"})])

    assert result.errors == [
        "ConfigMap web/mine: belongs to Sluice app 'one'; not taken over by 'two'"
    ]
    assert kube.get_object("v1", "ConfigMap", "mine", "web")["data"] == {"k": "v"}


def test_an_interrupted_apply_converges_with_nothing_orphaned(kube, applier):
    applier.apply(APP, [namespace("web"), configmap("a"), configmap("b")])
    kube.inject(*[Fault.drop()] * 3, method="PATCH", path="/configmaps/c$")
    new = [namespace("web"), configmap("a"), configmap("c"), configmap("d", wave=1)]

    broken = applier.apply(APP, new)

    assert not broken.ok and broken.pruned == []
    assert any(e.startswith("ConfigMap web/c: ") for e in broken.errors)
    # Recorded before any write: a restart knows about c and d and still about b.
    assert {("ConfigMap", "web", n) for n in "abcd"} <= inventory(kube)

    healed = applier.apply(APP, new)

    assert healed.ok, healed.errors
    assert healed.created == ["ConfigMap web/c", "ConfigMap web/d"]
    assert healed.pruned == ["ConfigMap web/b"]
    assert inventory(kube) == {("Namespace", None, "web")} | {
        ("ConfigMap", "web", n) for n in "acd"
    }


# -- conflicts and faults -------------------------------------------------------------------


def test_conflict_with_another_field_manager_force_or_not(kube, api, applier, tmp_path):
    applier.apply(APP, [namespace("web"), configmap("cm", data={"k": "v"})])
    other = DynamicClient(api, cache_file=str(tmp_path / "other.json"))
    configmaps = other.resources.get(api_version="v1", kind="ConfigMap")
    configmaps.server_side_apply(
        body={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "web"},
            "data": {"k": "hand-edit"},
        },
        field_manager="kubectl",
        force_conflicts=True,
    )
    wanted = [namespace("web"), configmap("cm", data={"k": "git"})]

    refused = applier.apply(APP, wanted, force_conflicts=False)

    assert len(refused.errors) == 1
    assert refused.errors[0].startswith("ConfigMap web/cm: ")
    assert "conflict" in refused.errors[0].lower() and "kubectl" in refused.errors[0]
    assert kube.get_object("v1", "ConfigMap", "cm", "web")["data"] == {"k": "hand-edit"}

    forced = applier.apply(APP, wanted)

    assert forced.ok and forced.updated == ["ConfigMap web/cm"]
    live = kube.get_object("v1", "ConfigMap", "cm", "web")
    assert live["data"] == {"k": "git"}


def test_a_500_on_patch_is_retried_then_reported_not_raised(kube, applier, sleeps):
    kube.inject(Fault.error(500), method="PATCH", path="/configmaps/settings$")

    retried = applier.apply(APP, app_objects())

    assert retried.ok and "ConfigMap web/settings" in retried.created
    assert len(sleeps) == 1
    kube.inject(*[Fault.error(500)] * 3, method="PATCH", path="/deployments/web$")
    objects = app_objects()
    objects[3]["spec"]["replicas"] = 5
    objects[1]["data"]["mode"] = "changed"

    failed = applier.apply(APP, objects)

    assert failed.updated == ["ConfigMap web/settings"]
    assert len(failed.errors) == 1 and failed.errors[0].startswith("Deployment web/web: ")
    assert kube.get_object("apps/v1", "Deployment", "web", "web")["spec"]["replicas"] == 2


def test_a_429_on_patch_waits_as_long_as_retry_after_says(kube, applier, sleeps):
    kube.inject(Fault.throttle(retry_after=3), method="PATCH", path="/configmaps/settings$")

    result = applier.apply(APP, app_objects())

    assert result.ok
    assert sleeps == [3.0]


def test_api_errors_about_a_secret_never_show_its_values(kube, applier):
    bad = secret("Bad_Secret", password="hunter2-very-secret")

    result = applier.apply(APP, [namespace("web"), bad])

    assert result.errors and result.errors[0].startswith("Secret web/Bad_Secret: ")
    text = "\n".join(result.errors)
    assert "hunter2-very-secret" not in text
    assert base64.b64encode(b"hunter2-very-secret").decode() not in text


def test_bad_input_applies_nothing(kube, applier):
    duplicated = [namespace("web"), configmap("a"), configmap("a")]
    bad_wave = [namespace("web"), configmap("b", wave=None)]
    bad_wave[1]["metadata"]["annotations"] = {"sluice.dev/wave": "soon"}

    for objects in (duplicated, bad_wave, [namespace("web"), {"kind": "ConfigMap"}]):
        result = applier.apply(APP, objects)
        assert not result.ok and result.errors[0].startswith("nothing applied: ")
    assert "appears twice" in applier.apply(APP, duplicated).errors[0]
    assert kube.write_calls() == 0
    with pytest.raises(PlanError, match="not an integer"):
        applier.drift(APP, bad_wave, secret_key=KEY)


# -- drift and dry-run diff -------------------------------------------------------------------


def kubectl_edit(api: client.ApiClient, tmp_path: Path, api_version: str, kind: str, patch: dict):
    """A merge patch by another manager, as ``kubectl edit``/``kubectl patch`` sends it."""
    dyn = DynamicClient(api, cache_file=str(tmp_path / "kubectl.json"))
    resource = dyn.resources.get(api_version=api_version, kind=kind)
    dyn.patch(
        resource,
        body=patch,
        name=patch["metadata"]["name"],
        namespace=patch["metadata"].get("namespace"),
        content_type="application/merge-patch+json",
        field_manager="kubectl-edit",
    )


def test_drift_after_a_live_edit_is_reported_masked_and_nothing_changes(
    kube, api, applier, tmp_path
):
    applier.apply(APP, app_objects())
    # Controllers add status; the server would add defaults: neither is drift.
    kube.set_status("apps/v1", "Deployment", "web", {"replicas": 2}, "web")
    assert applier.drift(APP, app_objects(), secret_key=KEY) == []
    meta = {"name": "web", "namespace": "web"}
    kubectl_edit(
        api, tmp_path, "apps/v1", "Deployment", {"metadata": meta, "spec": {"replicas": 7}}
    )
    secret_meta = {"name": "creds", "namespace": "web"}
    new_value = base64.b64encode(b"stolen-and-changed").decode()
    kubectl_edit(
        api, tmp_path, "v1", "Secret", {"metadata": secret_meta, "data": {"password": new_value}}
    )
    version = kube.resource_version
    kube.reset_calls()

    changes = applier.drift(APP, app_objects(), secret_key=KEY)

    assert kube.write_calls() == 0 and kube.resource_version == version
    by_name = {(c.kind, c.name): c for c in changes}
    assert set(by_name) == {("Deployment", "web"), ("Secret", "creds")}
    deploy = by_name[("Deployment", "web")]
    assert deploy.action == "update"
    assert "-  replicas: 7\n" in deploy.diff and "+  replicas: 2\n" in deploy.diff
    secret_diff = by_name[("Secret", "creds")].diff
    assert "<secret sha:" in secret_diff
    for leaked in ("stolen-and-changed", new_value, "hunter2-very-secret", "applied-hash"):
        assert leaked not in secret_diff
    # The applied hash (a digest over the Secret's values) never shows in any diff.
    assert all("applied-hash" not in c.diff for c in changes)


def test_a_secret_value_pasted_into_a_drifted_object_is_masked(kube, api, applier, tmp_path):
    applier.apply(APP, app_objects())
    meta = {"name": "settings", "namespace": "web"}
    pasted = {"mode": "prod hunter2-very-secret"}
    kubectl_edit(api, tmp_path, "v1", "ConfigMap", {"metadata": meta, "data": pasted})

    [change] = applier.drift(APP, app_objects(), secret_key=KEY)

    assert (change.kind, change.name) == ("ConfigMap", "settings")
    assert "hunter2-very-secret" not in change.diff and "<secret sha:" in change.diff


def test_drift_reports_missing_objects_and_leftovers(kube, applier):
    applier.apply(APP, [*app_objects(), configmap("old")])
    with kube.api_client() as api_client:
        client.CoreV1Api(api_client).delete_namespaced_config_map("settings", "web")
    kube.reset_calls()

    changes = applier.drift(APP, app_objects(), secret_key=KEY)

    assert [(c.action, c.kind, c.name) for c in changes] == [
        ("delete", "ConfigMap", "old"),
        ("create", "ConfigMap", "settings"),
    ]
    assert kube.write_calls() == 0


def test_heal_reapplies_a_drifted_object_that_plain_apply_leaves_alone(
    kube, api, applier, tmp_path
):
    applier.apply(APP, app_objects())
    meta = {"name": "web", "namespace": "web"}
    kubectl_edit(
        api, tmp_path, "apps/v1", "Deployment", {"metadata": meta, "spec": {"replicas": 7}}
    )

    plain = applier.apply(APP, app_objects())
    assert (
        plain.updated == []
        and kube.get_object("apps/v1", "Deployment", "web", "web")["spec"]["replicas"] == 7
    )

    healed = applier.apply(APP, app_objects(), heal=True)

    assert healed.updated == ["Deployment web/web"]
    assert kube.get_object("apps/v1", "Deployment", "web", "web")["spec"]["replicas"] == 2
    assert applier.drift(APP, app_objects(), secret_key=KEY) == []


def test_dry_run_diff_shows_changes_and_leaves_no_trace(kube, applier):
    applier.apply(APP, [*app_objects(), configmap("old")])
    version = kube.resource_version
    before = copy.deepcopy(kube.list_objects("v1", "ConfigMap", "web"))
    kube.reset_calls()
    objects = app_objects()
    objects[1]["data"]["mode"] = "canary"
    objects[2] = secret("creds", password="rotated-password")
    objects += [namespace("fresh"), configmap("new", ns="fresh")]

    changes = applier.dry_run_diff(APP, objects, secret_key=KEY)

    assert kube.write_calls() == 0
    assert kube.resource_version == version
    assert kube.list_objects("v1", "ConfigMap", "web") == before
    assert kube.get_object("v1", "Namespace", "fresh") is None
    summary = {(c.action, c.kind, c.namespace, c.name) for c in changes}
    assert summary == {
        ("update", "ConfigMap", "web", "settings"),
        ("update", "Secret", "web", "creds"),
        ("create", "Namespace", None, "fresh"),
        ("create", "ConfigMap", "fresh", "new"),
        ("delete", "ConfigMap", "web", "old"),
    }
    text = "\n".join(c.diff for c in changes)
    assert "+  mode: canary" in text
    assert "dry run failed" not in text  # the new namespace comes with the same change
    for leaked in ("rotated-password", "hunter2-very-secret", "applied-hash"):
        assert leaked not in text
    assert kube.calls("apply", dry_run=True)["apply"] == len(objects)


# -- scale -------------------------------------------------------------------------------------


def test_time_1000_object_apply_noop_and_drift(kube, applier):
    objects: list[dict] = [namespace(f"ns{n}") for n in range(10)]
    for index in range(990):
        ns = f"ns{index % 10}"
        if index % 3 == 0:
            objects.append(deployment(f"d{index}", ns))
        elif index % 3 == 1:
            objects.append(configmap(f"c{index}", ns, data={"i": str(index)}))
        else:
            objects.append(secret(f"s{index}", ns, token=f"t{index}"))

    started = time.perf_counter()
    first = applier.apply(APP, objects)
    apply_s = time.perf_counter() - started
    assert first.ok and len(first.created) == 1000

    kube.reset_calls()
    started = time.perf_counter()
    again = applier.apply(APP, objects)
    noop_s = time.perf_counter() - started
    assert len(again.unchanged) == 1000
    assert kube.write_calls() == 0
    lists = kube.calls("list")["list"]
    assert lists <= 4  # Namespace, Deployment, ConfigMap, Secret

    started = time.perf_counter()
    assert applier.drift(APP, objects, secret_key=KEY) == []
    drift_s = time.perf_counter() - started
    print(
        f"\n1,000 objects: apply {apply_s:.2f} s, no-op cycle {noop_s:.2f} s "
        f"({lists} LISTs, 0 writes), drift check {drift_s:.2f} s"
    )
    assert noop_s < 10 and apply_s < 60  # generous: shared 2-core CI machines


def test_apply_result_entries_and_ok():
    result = ApplyResult(created=["ConfigMap a/b"])
    assert result.ok and not ApplyResult(errors=["x"]).ok


def test_inventory_store_round_trip_creates_its_namespace(kube, api, tmp_path):
    store = InventoryStore(api, namespace="ops")
    refs = {ObjectRef("v1", "ConfigMap", "web", "a"), ObjectRef("v1", "Namespace", None, "web")}
    assert store.load(APP) == set()

    store.save(APP, refs)
    kube.reset_calls()
    store.save(APP, refs)

    assert kube.write_calls() == 0
    assert kube.get_object("v1", "Namespace", "ops") is not None
    assert InventoryStore(api, namespace="ops").load(APP) == refs


def test_dry_run_diff_notes_an_object_the_server_would_reject(kube, applier):
    applier.apply(APP, app_objects())
    kube.reset_calls()

    changes = applier.dry_run_diff(APP, [*app_objects(), configmap("Bad_Name")], secret_key=KEY)

    (change,) = changes
    assert (change.action, change.name) == ("create", "Bad_Name")
    assert "# server-side dry run failed: " in change.diff and "Invalid" in change.diff
    assert kube.write_calls() == 0


def test_a_puller_limited_to_namespaces_reads_object_by_object(kube, tmp_path):
    kube.add_namespace("web")
    kube.add_namespace("sluice-system")
    kube.add_token("ns-token", user="puller", namespaces=["web", "sluice-system"])
    objects = [configmap("a"), configmap("b")]
    with kube.api_client("ns-token") as api_client:
        limited = Applier(api_client, discovery_cache=tmp_path / "d.json")

        assert limited.apply(APP, objects).created == ["ConfigMap web/a", "ConfigMap web/b"]
        kube.reset_calls()
        again = limited.apply(APP, objects)

    assert again.ok and len(again.unchanged) == 2
    assert kube.write_calls() == 0
    assert [r.status for r in kube.requests if r.verb == "list"] == [403]  # cluster-wide
    assert kube.calls("get")["get"] == 3  # the inventory, then each object


def test_a_corrupt_inventory_fails_closed(kube, applier):
    applier.apply(APP, [namespace("web"), configmap("a"), configmap("b")])
    kube.seed(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"sluice-inventory-{APP}", "namespace": "sluice-system"},
            "data": {"inventory.json": "{not json"},
        }
    )
    kube.reset_calls()

    result = applier.apply(APP, [namespace("web"), configmap("a", data={"k": "new"})])

    assert result.errors[0].startswith("nothing applied: inventory ConfigMap")
    assert "corrupt" in result.errors[0]
    assert kube.write_calls() == 0
    assert kube.get_object("v1", "ConfigMap", "b", "web") is not None


def test_a_namespaced_object_without_namespace_is_an_error_for_it_alone(kube, applier):
    loose = configmap("loose")
    del loose["metadata"]["namespace"]

    result = applier.apply(APP, [namespace("web"), loose, configmap("fine")])

    assert result.errors == ["ConfigMap loose: a namespaced ConfigMap must name its namespace"]
    assert result.created == ["Namespace web", "ConfigMap web/fine"]

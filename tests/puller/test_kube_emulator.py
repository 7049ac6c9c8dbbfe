"""The Kubernetes API emulator, driven only through the official ``kubernetes`` client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from tests.emulators.kube import Fault, KubeEmulator, running

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
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object"}},
            }
        ],
    },
}


def deployment(name: str = "web", namespace: str = "web", replicas: int = 2, **labels: str):
    labels = {"app": name, **labels}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    }


def configmap(name: str, namespace: str = "web", data: dict | None = None, **labels: str):
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": data or {"key": "value"},
    }


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict:
    body = json.loads(exc.value.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["code"] == exc.value.status
    return body


def managers(obj: dict) -> dict[str, dict]:
    return {
        f"{m['manager']}/{m['operation']}": m["fieldsV1"]
        for m in obj["metadata"].get("managedFields", [])
    }


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with running() as emulator:
        emulator.add_namespace("web")
        yield emulator


@pytest.fixture
def api(kube: KubeEmulator) -> Iterator[client.ApiClient]:
    with kube.api_client() as api_client:
        yield api_client


@pytest.fixture
def dyn(api: client.ApiClient, tmp_path: Path) -> DynamicClient:
    # The discovery cache is keyed by host URL only; a per-test file keeps runs apart.
    return DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))


def deployments(dyn: DynamicClient):
    return dyn.resources.get(api_version="apps/v1", kind="Deployment")


def configmaps(dyn: DynamicClient):
    return dyn.resources.get(api_version="v1", kind="ConfigMap")


# ---------------------------------------------------------------------------
# Discovery


def test_discovery_serves_the_builtin_groups_a_puller_needs(api, dyn):
    assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {
        "apps",
        "batch",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "policy",
        "apiextensions.k8s.io",
    } <= groups
    expected = {
        ("v1", "Namespace"): False,
        ("v1", "ConfigMap"): True,
        ("v1", "Secret"): True,
        ("v1", "Service"): True,
        ("v1", "ServiceAccount"): True,
        ("v1", "Pod"): True,
        ("v1", "PersistentVolumeClaim"): True,
        ("v1", "Event"): True,
        ("apps/v1", "Deployment"): True,
        ("apps/v1", "StatefulSet"): True,
        ("apps/v1", "DaemonSet"): True,
        ("apps/v1", "ReplicaSet"): True,
        ("batch/v1", "Job"): True,
        ("batch/v1", "CronJob"): True,
        ("networking.k8s.io/v1", "Ingress"): True,
        ("networking.k8s.io/v1", "NetworkPolicy"): True,
        ("rbac.authorization.k8s.io/v1", "Role"): True,
        ("rbac.authorization.k8s.io/v1", "RoleBinding"): True,
        ("rbac.authorization.k8s.io/v1", "ClusterRole"): False,
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): False,
        ("policy/v1", "PodDisruptionBudget"): True,
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): False,
    }
    for (api_version, kind), namespaced in expected.items():
        resource = dyn.resources.get(api_version=api_version, kind=kind)
        assert resource.namespaced is namespaced, kind
    assert "status" in deployments(dyn).subresources
    assert "status" not in configmaps(dyn).subresources


def test_a_crd_created_at_runtime_is_discovered_and_usable(kube, api, dyn, tmp_path):
    with pytest.raises(ResourceNotFoundError):
        dyn.resources.get(api_version="example.com/v1", kind="Widget")

    crd = client.ApiextensionsV1Api(api).create_custom_resource_definition(WIDGET_CRD)
    assert {c.type for c in crd.status.conditions if c.status == "True"} >= {"Established"}

    # The same client re-discovers on a cache miss, as against a real cluster.
    widgets = dyn.resources.get(api_version="example.com/v1", kind="Widget")
    assert widgets.namespaced and "status" in widgets.subresources
    created = widgets.create(
        body={
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w1", "namespace": "web"},
            "spec": {"size": 3},
        }
    )
    assert created.metadata.generation == 1
    listed = widgets.get(namespace="web")
    assert [(i.kind, i.metadata.name) for i in listed.items] == [("Widget", "w1")]

    cluster_crd = json.loads(json.dumps(WIDGET_CRD))
    cluster_crd["metadata"]["name"] = "gadgets.example.com"
    cluster_crd["spec"]["scope"] = "Cluster"
    cluster_crd["spec"]["names"] = {"plural": "gadgets", "kind": "Gadget"}
    client.ApiextensionsV1Api(api).create_custom_resource_definition(cluster_crd)
    gadgets = dyn.resources.get(api_version="example.com/v1", kind="Gadget")
    assert not gadgets.namespaced
    gadgets.create(
        body={"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    )
    assert kube.get_object("example.com/v1", "Gadget", "g") is not None

    client.ApiextensionsV1Api(api).delete_custom_resource_definition("widgets.example.com")
    fresh = DynamicClient(api, cache_file=str(tmp_path / "after-delete.json"))
    with pytest.raises(ResourceNotFoundError):
        fresh.resources.get(api_version="example.com/v1", kind="Widget")
    assert fresh.resources.get(api_version="example.com/v1", kind="Gadget").name == "gadgets"


def test_a_crd_whose_name_does_not_match_its_names_is_invalid(api):
    bad = json.loads(json.dumps(WIDGET_CRD))
    bad["metadata"]["name"] = "widgets.other.com"
    with pytest.raises(ApiException) as exc:
        client.ApiextensionsV1Api(api).create_custom_resource_definition(bad)
    body = status_of(exc)
    assert exc.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"


# ---------------------------------------------------------------------------
# CRUD and errors


def test_create_get_replace_delete_through_the_typed_client(kube, api):
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map("web", configmap("settings"))
    assert created.metadata.uid and created.metadata.resource_version
    assert kube.get_object("v1", "ConfigMap", "settings", "web")["data"] == {"key": "value"}

    fetched = core.read_namespaced_config_map("settings", "web")
    fetched.data = {"key": "changed"}
    replaced = core.replace_namespaced_config_map("settings", "web", fetched)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid
    stored = kube.get_object("v1", "ConfigMap", "settings", "web")
    assert stored["metadata"]["creationTimestamp"].endswith("Z")

    result = core.delete_namespaced_config_map("settings", "web")  # a plain dict here
    assert result["status"] == "Success" and result["details"]["name"] == "settings"
    assert kube.get_object("v1", "ConfigMap", "settings", "web") is None


def test_missing_object_is_a_404_not_found_status(api):
    with pytest.raises(ApiException) as exc:
        client.AppsV1Api(api).read_namespaced_deployment("nope", "web")
    body = status_of(exc)
    assert exc.value.status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'deployments.apps "nope" not found'
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(api).delete_namespaced_config_map("nope", "web")
    assert exc.value.status == 404


def test_creating_twice_is_a_409_already_exists_status(api):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("web", configmap("twice"))
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map("web", configmap("twice"))
    body = status_of(exc)
    assert exc.value.status == 409 and body["reason"] == "AlreadyExists"
    assert body["details"] == {"name": "twice", "kind": "configmaps"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda o: o["metadata"].pop("name"), "metadata.name"),
        (lambda o: o["metadata"].update(name="Bad_Name"), "metadata.name"),
        (lambda o: o["metadata"].update(labels={"app": "x" * 64}), "metadata.labels"),
        (lambda o: o.update(kind="Secret"), "kind"),
    ],
    ids=["missing-name", "bad-name", "bad-label", "kind-mismatch"],
)
def test_invalid_objects_are_a_422_invalid_status(kube, dyn, change, field):
    body = configmap("fine")
    change(body)
    with pytest.raises(ApiException) as exc:
        configmaps(dyn).create(body=body, namespace="web")
    status = status_of(exc)
    assert exc.value.status == 422 and status["reason"] == "Invalid"
    assert status["details"]["kind"] == "ConfigMap"
    assert [c["field"] for c in status["details"]["causes"]] == [field]
    assert kube.list_objects("v1", "ConfigMap", "web") == []


def test_namespaced_create_needs_an_existing_namespace(api):
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(api).create_namespaced_config_map("ghost", configmap("x", "ghost"))
    body = status_of(exc)
    assert exc.value.status == 404 and body["message"] == 'namespaces "ghost" not found'


def test_put_with_a_stale_resource_version_is_a_409_conflict(kube, api):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("web", configmap("race"))
    first = core.read_namespaced_config_map("race", "web")
    second = core.read_namespaced_config_map("race", "web")
    first.data = {"key": "first"}
    core.replace_namespaced_config_map("race", "web", first)
    second.data = {"key": "second"}
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("race", "web", second)
    body = status_of(exc)
    assert exc.value.status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    assert kube.get_object("v1", "ConfigMap", "race", "web")["data"] == {"key": "first"}


def test_delete_with_a_stale_precondition_is_a_409_and_keeps_the_object(kube, api):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("web", configmap("keep"))
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1"))
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_config_map("keep", "web", body=options)
    assert exc.value.status == 409
    assert kube.get_object("v1", "ConfigMap", "keep", "web") is not None


def test_patches_merge_json_and_strategic(kube, api, dyn):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("web", configmap("p", data={"a": "1", "b": "2"}))
    configmaps(dyn).patch(
        name="p",
        namespace="web",
        body={"data": {"a": None, "c": "3"}},
        content_type="application/merge-patch+json",
    )
    assert kube.get_object("v1", "ConfigMap", "p", "web")["data"] == {"b": "2", "c": "3"}
    core.patch_namespaced_config_map("p", "web", {"metadata": {"labels": {"tier": "db"}}})
    assert kube.get_object("v1", "ConfigMap", "p", "web")["metadata"]["labels"] == {"tier": "db"}
    core.patch_namespaced_config_map(
        "p", "web", [{"op": "replace", "path": "/data/b", "value": "20"}]
    )
    assert kube.get_object("v1", "ConfigMap", "p", "web")["data"]["b"] == "20"
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_config_map(
            "p", "web", [{"op": "test", "path": "/data/b", "value": "nope"}]
        )
    assert exc.value.status == 422


def test_owner_references_cascade_unless_orphaned(kube, api):
    apps = client.AppsV1Api(api)
    for name in ("cascade", "orphan"):
        owner = apps.create_namespaced_deployment("web", deployment(name))
        replica_set = deployment(f"{name}-1")
        replica_set["kind"] = "ReplicaSet"
        replica_set["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": owner.metadata.uid}
        ]
        apps.create_namespaced_replica_set("web", replica_set)
    apps.delete_namespaced_deployment("cascade", "web", propagation_policy="Foreground")
    apps.delete_namespaced_deployment("orphan", "web", propagation_policy="Orphan")
    names = [o["metadata"]["name"] for o in kube.list_objects("apps/v1", "ReplicaSet")]
    assert names == ["orphan-1"]


def test_delete_collection_by_label(kube, dyn):
    for name, tier in [("a", "x"), ("b", "x"), ("c", "y")]:
        kube.seed(configmap(name, tier=tier))
    deleted = configmaps(dyn).delete(namespace="web", label_selector="tier=x")
    assert [item.metadata.name for item in deleted.items] == ["a", "b"]
    assert [o["metadata"]["name"] for o in kube.list_objects("v1", "ConfigMap", "web")] == ["c"]


# ---------------------------------------------------------------------------
# Listing


def test_label_and_field_selectors(kube, api):
    for name, labels in [
        ("a", {"app": "web", "tier": "front"}),
        ("b", {"app": "web", "tier": "back"}),
        ("c", {"app": "db"}),
        ("d", {}),
    ]:
        kube.seed(configmap(name, **labels))
    kube.add_namespace("other")
    kube.seed(configmap("e", "other", app="web"))
    core = client.CoreV1Api(api)

    def names(selector: str = "", fields: str = "", namespace: str | None = "web") -> list[str]:
        if namespace is None:
            found = core.list_config_map_for_all_namespaces(
                label_selector=selector, field_selector=fields
            )
        else:
            found = core.list_namespaced_config_map(
                namespace, label_selector=selector, field_selector=fields
            )
        return [i.metadata.name for i in found.items]

    assert names() == ["a", "b", "c", "d"]
    assert names("app=web") == ["a", "b"]
    assert names("app==web,tier=back") == ["b"]
    assert names("app!=web") == ["c", "d"]
    assert names("tier in (front, back)") == ["a", "b"]
    assert names("app notin (web)") == ["c", "d"]
    assert names("tier") == ["a", "b"]
    assert names("!tier") == ["c", "d"]
    assert names(fields="metadata.name=c") == ["c"]
    assert names(fields="metadata.name!=c") == ["a", "b", "d"]
    # Across namespaces the order is the storage key order: namespace, then name.
    assert names("app=web", namespace=None) == ["e", "a", "b"]
    assert names(fields="metadata.namespace=other", namespace=None) == ["e"]
    with pytest.raises(ApiException) as exc:
        names(fields="spec.nodeName=x")
    assert exc.value.status == 400


def test_list_pages_with_limit_and_continue(kube, api):
    for index in range(5):
        kube.seed(configmap(f"cm-{index}"))
    core = client.CoreV1Api(api)
    seen, token = [], None
    while True:
        page = core.list_namespaced_config_map("web", limit=2, _continue=token)
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert seen == [f"cm-{i}" for i in range(5)]


def test_builtin_list_items_omit_kind_like_the_real_server(kube, api, dyn):
    kube.seed(configmap("one"))
    response = client.CoreV1Api(api).list_namespaced_config_map("web", _preload_content=False)
    raw = json.loads(response.data)
    assert raw["kind"] == "ConfigMapList" and raw["apiVersion"] == "v1"
    assert "kind" not in raw["items"][0]
    # DynamicClient fills the kind in itself, so products see it either way.
    assert configmaps(dyn).get(namespace="web").items[0].kind == "ConfigMap"


# ---------------------------------------------------------------------------
# Server-side apply


def test_apply_creates_then_updates_and_bumps_generation(kube, dyn):
    first = deployments(dyn).server_side_apply(body=deployment(), field_manager="sluice")
    assert first.metadata.generation == 1
    assert "f:replicas" in managers(first.to_dict())["sluice/Apply"]["f:spec"]
    second = deployments(dyn).server_side_apply(body=deployment(replicas=5), field_manager="sluice")
    assert second.spec.replicas == 5 and second.metadata.generation == 2
    assert int(second.metadata.resourceVersion) > int(first.metadata.resourceVersion)


def test_a_repeated_apply_changes_nothing(kube, dyn):
    deployments(dyn).server_side_apply(body=deployment(), field_manager="sluice")
    before = kube.get_object("apps/v1", "Deployment", "web", "web")
    again = deployments(dyn).server_side_apply(body=deployment(), field_manager="sluice")
    assert again.metadata.resourceVersion == before["metadata"]["resourceVersion"]
    assert kube.get_object("apps/v1", "Deployment", "web", "web") == before


def test_apply_conflicts_with_another_manager_then_force_takes_ownership(kube, dyn):
    deployments(dyn).server_side_apply(body=deployment(), field_manager="sluice")
    scaler = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "web"},
        "spec": {"replicas": 7},
    }
    with pytest.raises(ApiException) as exc:
        deployments(dyn).server_side_apply(body=scaler, field_manager="hpa")
    body = status_of(exc)
    assert exc.value.status == 409 and body["reason"] == "Conflict"
    assert body["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "sluice"',
            "field": ".spec.replicas",
        }
    ]
    assert kube.get_object("apps/v1", "Deployment", "web", "web")["spec"]["replicas"] == 2

    # Applying the same value is shared ownership, not a conflict.
    scaler["spec"]["replicas"] = 2
    deployments(dyn).server_side_apply(body=scaler, field_manager="hpa")

    scaler["spec"]["replicas"] = 7
    forced = (
        deployments(dyn)
        .server_side_apply(body=scaler, field_manager="hpa", force_conflicts=True)
        .to_dict()
    )
    assert forced["spec"]["replicas"] == 7
    owned = managers(forced)
    assert "f:replicas" in owned["hpa/Apply"]["f:spec"]
    assert "f:replicas" not in owned["sluice/Apply"]["f:spec"]


def test_apply_conflicts_with_an_update_manager(kube, api, dyn):
    client.AppsV1Api(api).create_namespaced_deployment("web", deployment())
    with pytest.raises(ApiException) as exc:
        deployments(dyn).server_side_apply(body=deployment(replicas=3), field_manager="sluice")
    cause = status_of(exc)["details"]["causes"][0]
    assert cause["field"] == ".spec.replicas"
    assert cause["message"] == 'conflict with "OpenAPI-Generator" using apps/v1'


def test_fields_dropped_from_the_applied_config_are_removed_unless_shared(kube, dyn):
    deployments(dyn).server_side_apply(
        body=deployment(team="a", tier="web"), field_manager="sluice"
    )
    other = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "web", "labels": {"tier": "web"}},
    }
    deployments(dyn).server_side_apply(body=other, field_manager="labeller")
    deployments(dyn).server_side_apply(body=deployment(), field_manager="sluice")
    labels = kube.get_object("apps/v1", "Deployment", "web", "web")["metadata"]["labels"]
    assert labels == {"app": "web", "tier": "web"}


def test_apply_needs_a_field_manager(kube, dyn):
    with pytest.raises(ApiException) as exc:
        deployments(dyn).server_side_apply(body=deployment())
    body = status_of(exc)
    # The real server rejects it as invalid PatchOptions (422), not as a 400.
    assert exc.value.status == 422
    assert body["details"]["causes"][0]["field"] == "fieldManager"
    assert kube.get_object("apps/v1", "Deployment", "web", "web") is None


def test_secret_string_data_is_stored_as_base64_data_and_reapplies_as_a_no_op(kube, dyn):
    secrets = dyn.resources.get(api_version="v1", kind="Secret")
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "web"},
        "stringData": {"password": "s3cret"},
    }
    first = secrets.server_side_apply(body=body, field_manager="sluice")
    again = secrets.server_side_apply(body=body, field_manager="sluice")
    stored = kube.get_object("v1", "Secret", "db", "web")
    assert stored["data"] == {"password": "czNjcmV0"} and "stringData" not in stored
    assert again.metadata.resourceVersion == first.metadata.resourceVersion


def test_status_can_be_applied_by_its_own_manager(kube, dyn):
    deployments(dyn).server_side_apply(body=deployment(), field_manager="sluice")
    status = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "web"},
        "status": {"readyReplicas": 2},
    }
    deployments(dyn).status.server_side_apply(body=status, field_manager="controller")
    stored = kube.get_object("apps/v1", "Deployment", "web", "web")
    assert stored["status"] == {"readyReplicas": 2} and stored["metadata"]["generation"] == 1
    entry = [m for m in stored["metadata"]["managedFields"] if m["manager"] == "controller"]
    assert entry[0]["subresource"] == "status"


# ---------------------------------------------------------------------------
# Dry run


def test_dry_run_answers_fully_and_stores_nothing(kube, api, dyn):
    kube.seed(configmap("live"))
    version = kube.resource_version
    created = configmaps(dyn).create(body=configmap("new"), namespace="web", dry_run="All")
    assert created.metadata.uid and created.to_dict()["data"] == {"key": "value"}
    applied = deployments(dyn).server_side_apply(
        body=deployment(), field_manager="sluice", dry_run="All"
    )
    assert applied.spec.replicas == 2 and applied.metadata.managedFields
    patched = configmaps(dyn).patch(
        name="live", namespace="web", body={"data": {"key": "dry"}}, dry_run="All"
    )
    assert patched.to_dict()["data"] == {"key": "dry"}
    configmaps(dyn).delete(name="live", namespace="web", dry_run="All")
    with pytest.raises(ApiException) as exc:
        configmaps(dyn).create(body=configmap("Bad_Name"), namespace="web", dry_run="All")
    assert exc.value.status == 422

    assert kube.resource_version == version
    assert kube.get_object("v1", "ConfigMap", "live", "web")["data"] == {"key": "value"}
    assert kube.get_object("v1", "ConfigMap", "new", "web") is None
    assert kube.get_object("apps/v1", "Deployment", "web", "web") is None
    assert kube.write_calls() == 0
    assert kube.write_calls(dry_run=True) == 5


# ---------------------------------------------------------------------------
# Status subresource and timestamps


def test_status_subresource_plays_a_rollout(kube, api, dyn):
    apps = client.AppsV1Api(api)
    body = deployment()
    body["status"] = {"replicas": 99}
    created = apps.create_namespaced_deployment("web", body)
    assert created.status is None or created.status.replicas is None

    apps.patch_namespaced_deployment("web", "web", {"spec": {"replicas": 3}})
    apps.patch_namespaced_deployment_status(
        "web",
        "web",
        {"status": {"observedGeneration": 2, "updatedReplicas": 3, "availableReplicas": 3}},
    )
    live = apps.read_namespaced_deployment("web", "web")
    assert live.metadata.generation == 2
    assert live.status.observed_generation == 2 and live.status.available_replicas == 3

    # Status written through the main resource is ignored, spec through /status too.
    deployments(dyn).patch(
        name="web",
        namespace="web",
        body={"status": {"availableReplicas": 0}},
        content_type="application/merge-patch+json",
    )
    apps.patch_namespaced_deployment_status("web", "web", {"spec": {"replicas": 1}})
    stored = kube.get_object("apps/v1", "Deployment", "web", "web")
    assert stored["status"]["availableReplicas"] == 3 and stored["spec"]["replicas"] == 3


def test_z_timestamps_survive_a_typed_read_modify_write(kube, api):
    seeded = kube.seed(deployment())
    kube.set_status(
        "apps/v1",
        "Deployment",
        "web",
        {
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "lastUpdateTime": "2024-05-01T10:00:00Z",
                    "lastTransitionTime": "2024-05-01T10:00:00Z",
                }
            ],
        },
        namespace="web",
    )
    before = kube.get_object("apps/v1", "Deployment", "web", "web")
    apps = client.AppsV1Api(api)
    typed = apps.read_namespaced_deployment("web", "web")
    apps.replace_namespaced_deployment("web", "web", typed)
    apps.replace_namespaced_deployment_status("web", "web", typed)
    after = kube.get_object("apps/v1", "Deployment", "web", "web")
    assert after == before
    assert after["metadata"]["creationTimestamp"] == seeded["metadata"]["creationTimestamp"]
    assert after["status"]["conditions"][0]["lastUpdateTime"] == "2024-05-01T10:00:00Z"


# ---------------------------------------------------------------------------
# Namespaces, auth, counters


def test_deleting_a_namespace_deletes_its_objects(kube, api):
    kube.add_namespace("gone")
    kube.seed(configmap("inside", "gone"))
    kube.seed(deployment("inside", "gone"))
    kube.seed(configmap("outside", "web"))
    answer = client.CoreV1Api(api).delete_namespace("gone")  # a plain dict here
    assert answer["metadata"]["name"] == "gone" and answer["status"]["phase"] == "Terminating"
    assert kube.list_objects("v1", "ConfigMap", "gone") == []
    assert kube.list_objects("apps/v1", "Deployment", "gone") == []
    assert kube.get_object("v1", "Namespace", "gone") is None
    assert kube.get_object("v1", "ConfigMap", "outside", "web") is not None
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(api).delete_namespace("default")
    assert exc.value.status == 403


def test_requests_without_a_valid_token_are_401(kube):
    with kube.api_client(token="wrong") as anonymous, pytest.raises(ApiException) as exc:
        client.CoreV1Api(anonymous).list_namespace()
    assert exc.value.status == 401 and status_of(exc)["reason"] == "Unauthorized"


def test_read_only_and_namespace_scoped_tokens_are_forbidden_to_overreach(kube, tmp_path):
    kube.add_token("viewer", user="viewer", read_only=True)
    kube.add_token("web-admin", user="web-admin", namespaces=["web"])
    kube.seed(configmap("cm"))
    with kube.api_client("viewer") as viewer:
        core = client.CoreV1Api(viewer)
        assert core.read_namespaced_config_map("cm", "web").data == {"key": "value"}
        for dry_run in (None, "All"):
            with pytest.raises(ApiException) as exc:
                core.delete_namespaced_config_map("cm", "web", dry_run=dry_run)
            body = status_of(exc)
            assert exc.value.status == 403 and body["reason"] == "Forbidden"
            assert 'User "viewer" cannot delete resource "configmaps"' in body["message"]
    with kube.api_client("web-admin") as scoped:
        core = client.CoreV1Api(scoped)
        core.create_namespaced_config_map("web", configmap("mine"))
        with pytest.raises(ApiException) as exc:
            core.list_config_map_for_all_namespaces()
        assert exc.value.status == 403
        with pytest.raises(ApiException) as exc:
            core.read_namespace("web")
        assert exc.value.status == 403
    assert kube.get_object("v1", "ConfigMap", "cm", "web") is not None


def test_write_calls_are_counted_per_verb(kube, dyn):
    deployments(dyn).server_side_apply(body=deployment(), field_manager="sluice")
    kube.reset_calls()
    deployments(dyn).get(name="web", namespace="web")
    deployments(dyn).get(namespace="web")
    assert kube.write_calls() == 0
    deployments(dyn).server_side_apply(body=deployment(), field_manager="sluice")
    configmaps(dyn).create(body=configmap("x"), namespace="web")
    configmaps(dyn).delete(name="x", namespace="web")
    assert kube.calls() == {"get": 1, "list": 1, "apply": 1, "create": 1, "delete": 1}
    assert kube.write_calls() == 3


# ---------------------------------------------------------------------------
# Faults


def test_a_500_on_patch_surfaces_and_is_not_retried(kube, api):
    kube.seed(configmap("cm"))
    kube.inject(Fault.error(500), method="PATCH")
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(api).patch_namespaced_config_map("cm", "web", {"data": {"k": "v"}})
    assert exc.value.status == 500 and status_of(exc)["reason"] == "InternalError"
    assert len([r for r in kube.requests if r.method == "PATCH"]) == 1
    assert kube.get_object("v1", "ConfigMap", "cm", "web")["data"] == {"key": "value"}


def test_a_429_on_apply_surfaces_with_retry_after(kube, dyn):
    kube.inject(Fault.throttle(retry_after=3), method="PATCH")
    with pytest.raises(ApiException) as exc:
        deployments(dyn).server_side_apply(body=deployment(), field_manager="sluice")
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "3"
    assert status_of(exc)["details"] == {"retryAfterSeconds": 3}


def test_the_client_silently_retries_a_get_answered_503_with_retry_after(kube, api):
    # Why fault tests target PATCH/POST: urllib3 retries idempotent verbs on 429/503.
    kube.seed(configmap("cm"))
    kube.inject(Fault.error(503, retry_after=0), method="GET")
    assert client.CoreV1Api(api).read_namespaced_config_map("cm", "web").data
    assert [r.status for r in kube.requests if r.method == "GET"] == [503, 200]


def test_a_dropped_connection_surfaces_as_an_error(kube, api):
    kube.inject(Fault.drop(), method="POST")
    with pytest.raises(urllib3.exceptions.HTTPError):
        client.CoreV1Api(api).create_namespaced_config_map("web", configmap("lost"))
    assert kube.get_object("v1", "ConfigMap", "lost", "web") is None
    assert kube.pending_faults() == 0


def test_latency_and_random_faults(kube, api):
    core = client.CoreV1Api(api)
    kube.latency_s = 0.2
    started = time.perf_counter()
    core.list_namespaced_config_map("web")
    assert time.perf_counter() - started >= 0.2
    kube.clear_faults()
    kube.fail_randomly(0.5, Fault.error(500), seed=7)
    outcomes = []
    for index in range(20):
        try:
            core.create_namespaced_config_map("web", configmap(f"r{index}"))
            outcomes.append(True)
        except ApiException as exc:
            assert exc.status == 500
            outcomes.append(False)
    assert 0 < outcomes.count(True) < 20
    assert len(kube.list_objects("v1", "ConfigMap", "web")) == outcomes.count(True)


# ---------------------------------------------------------------------------
# Timing


def test_time_1000_noop_server_side_applies(kube, dyn):
    resource = deployments(dyn)
    body = deployment()
    resource.server_side_apply(body=body, field_manager="sluice")
    version = kube.resource_version
    started = time.perf_counter()
    for _ in range(1000):
        resource.server_side_apply(body=body, field_manager="sluice")
    elapsed = time.perf_counter() - started
    print(f"\n1,000 no-op server-side applies through DynamicClient: {elapsed:.2f} s")
    assert kube.resource_version == version

"""Health per kind (Argo CD's rules), played through the emulator's status subresource."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from bot.puller.apply import Applier
from bot.puller.cluster import RetryPolicy
from tests.emulators.kube import KubeEmulator, running

APP = "web"


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with running() as emulator:
        yield emulator


@pytest.fixture
def api(kube: KubeEmulator) -> Iterator[client.ApiClient]:
    with kube.api_client() as api_client:
        yield api_client


@pytest.fixture
def applier(api: client.ApiClient, tmp_path: Path) -> Applier:
    return Applier(
        api, discovery_cache=tmp_path / "discovery.json", retry=RetryPolicy(sleep=lambda _s: None)
    )


def obj(api_version: str, kind: str, name: str, spec: dict | None = None, ns: str = "web") -> dict:
    out = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": ns}}
    if spec is not None:
        out["spec"] = spec
    return out


def workload(kind: str, name: str, replicas: int | None = 3, **extra) -> dict:
    spec: dict = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
        },
        **extra,
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return obj("apps/v1", kind, name, spec)


def deployed(kube: KubeEmulator, applier: Applier, *objects: dict) -> list[dict]:
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}, *objects]
    result = applier.apply(APP, objs)
    assert result.ok, result.errors
    return objs


def status_of(applier: Applier, objects: list[dict], kind: str) -> tuple[str, str]:
    report = applier.health(APP, objects)
    (found,) = [o for o in report.objects if o.kind == kind]
    return found.status, found.message


def generation(kube: KubeEmulator, api_version: str, kind: str, name: str) -> int:
    return kube.get_object(api_version, kind, name, "web")["metadata"]["generation"]


def test_deployment_rollout_progressing_then_healthy_then_degraded_on_deadline(kube, applier):
    objects = deployed(kube, applier, workload("Deployment", "web"))
    assert status_of(applier, objects, "Deployment")[0] == "Progressing"  # nothing observed

    gen = generation(kube, "apps/v1", "Deployment", "web")
    rolling = {"observedGeneration": gen, "replicas": 4, "updatedReplicas": 1}
    kube.set_status("apps/v1", "Deployment", "web", rolling, "web")
    state, message = status_of(applier, objects, "Deployment")
    assert state == "Progressing" and "1 out of 3 new replicas" in message

    old_pending = {"observedGeneration": gen, "replicas": 4, "updatedReplicas": 3}
    kube.set_status("apps/v1", "Deployment", "web", old_pending, "web")
    assert "1 old replicas are pending termination" in status_of(applier, objects, "Deployment")[1]

    done = {"observedGeneration": gen, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    kube.set_status("apps/v1", "Deployment", "web", done, "web")
    assert applier.health(APP, objects).status == "Healthy"

    stuck = dict(done, availableReplicas=1)
    stuck["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    kube.set_status("apps/v1", "Deployment", "web", stuck, "web")
    report = applier.health(APP, objects)
    assert report.status == "Degraded"
    assert "exceeded its progress deadline" in report.unhealthy[0].message


def test_a_new_generation_is_progressing_until_observed(kube, applier):
    objects = deployed(kube, applier, workload("Deployment", "web"))
    done = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    kube.set_status("apps/v1", "Deployment", "web", done, "web")
    assert applier.health(APP, objects).status == "Healthy"

    objects[1]["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    assert applier.apply(APP, objects).updated == ["Deployment web/web"]

    assert generation(kube, "apps/v1", "Deployment", "web") == 2
    state, message = status_of(applier, objects, "Deployment")
    assert state == "Progressing" and "generation" in message


def test_statefulset_daemonset_and_replicaset(kube, applier):
    objects = deployed(
        kube,
        applier,
        workload("StatefulSet", "db", serviceName="db"),
        workload("DaemonSet", "agent", replicas=None),
        workload("ReplicaSet", "rs", replicas=2),
    )
    report = applier.health(APP, objects)
    assert {o.kind: o.status for o in report.objects if o.kind != "Namespace"} == {
        "StatefulSet": "Progressing",
        "DaemonSet": "Progressing",
        "ReplicaSet": "Progressing",
    }

    sts = {
        "observedGeneration": 1,
        "readyReplicas": 2,
        "currentRevision": "a",
        "updateRevision": "b",
    }
    kube.set_status("apps/v1", "StatefulSet", "db", sts, "web")
    assert "Waiting for 1 pods to be ready" in status_of(applier, objects, "StatefulSet")[1]
    kube.set_status("apps/v1", "StatefulSet", "db", dict(sts, readyReplicas=3), "web")
    assert "rolling update to complete" in status_of(applier, objects, "StatefulSet")[1]
    kube.set_status(
        "apps/v1", "StatefulSet", "db", dict(sts, readyReplicas=3, currentRevision="b"), "web"
    )
    assert status_of(applier, objects, "StatefulSet")[0] == "Healthy"

    ds = {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3}
    kube.set_status("apps/v1", "DaemonSet", "agent", dict(ds, numberAvailable=2), "web")
    assert "2 of 3 updated pods are available" in status_of(applier, objects, "DaemonSet")[1]
    kube.set_status("apps/v1", "DaemonSet", "agent", dict(ds, numberAvailable=3), "web")
    assert status_of(applier, objects, "DaemonSet")[0] == "Healthy"

    failure = {"type": "ReplicaFailure", "status": "True", "message": "quota exceeded"}
    rs = {"observedGeneration": 1, "availableReplicas": 2}
    kube.set_status("apps/v1", "ReplicaSet", "rs", dict(rs, conditions=[failure]), "web")
    assert status_of(applier, objects, "ReplicaSet") == ("Degraded", "quota exceeded")
    kube.set_status("apps/v1", "ReplicaSet", "rs", rs, "web")
    assert applier.health(APP, objects).status == "Healthy"


def job() -> dict:
    template = {
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "migrate", "image": "migrate:1"}],
        }
    }
    return obj("batch/v1", "Job", "migrate", {"template": template})


def test_job_complete_is_healthy_and_failed_is_degraded(kube, applier):
    objects = deployed(kube, applier, job())
    assert status_of(applier, objects, "Job")[0] == "Progressing"

    complete = {"type": "Complete", "status": "True", "message": ""}
    kube.set_status("batch/v1", "Job", "migrate", {"conditions": [complete]}, "web")
    assert status_of(applier, objects, "Job")[0] == "Healthy"

    failed = {"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}
    kube.set_status("batch/v1", "Job", "migrate", {"conditions": [failed]}, "web")
    assert status_of(applier, objects, "Job") == ("Degraded", "BackoffLimitExceeded")
    assert applier.health(APP, objects).status == "Degraded"


def test_pvc_service_load_balancer_and_ingress(kube, applier):
    pvc = obj("v1", "PersistentVolumeClaim", "data", {"accessModes": ["ReadWriteOnce"]})
    lb = obj("v1", "Service", "public", {"type": "LoadBalancer", "ports": [{"port": 80}]})
    internal = obj("v1", "Service", "internal", {"ports": [{"port": 80}]})
    rule = {"host": "web.example.com"}
    ingress = obj("networking.k8s.io/v1", "Ingress", "web", {"rules": [rule]})
    objects = deployed(kube, applier, pvc, lb, internal, ingress)

    report = applier.health(APP, objects)
    assert {(o.kind, o.name): o.status for o in report.objects} == {
        ("Namespace", "web"): "Healthy",
        ("PersistentVolumeClaim", "data"): "Progressing",
        ("Service", "public"): "Progressing",
        ("Service", "internal"): "Healthy",
        ("Ingress", "web"): "Progressing",
    }

    kube.set_status("v1", "PersistentVolumeClaim", "data", {"phase": "Bound"}, "web")
    address = {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
    kube.set_status("v1", "Service", "public", address, "web")
    kube.set_status("networking.k8s.io/v1", "Ingress", "web", address, "web")
    assert applier.health(APP, objects).status == "Healthy"

    kube.set_status("v1", "PersistentVolumeClaim", "data", {"phase": "Lost"}, "web")
    assert status_of(applier, objects, "PersistentVolumeClaim")[0] == "Degraded"


def pod(restart_policy: str | None = None) -> dict:
    spec: dict = {"containers": [{"name": "app", "image": "app:1"}]}
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    return obj("v1", "Pod", "p", spec)


def test_pod_crashloop_is_degraded_ready_is_healthy(kube, applier):
    objects = deployed(kube, applier, pod())
    assert status_of(applier, objects, "Pod")[0] == "Progressing"  # no phase yet: Pending

    crashing = {
        "phase": "Running",
        "containerStatuses": [
            {
                "name": "app",
                "ready": False,
                "restartCount": 5,
                "state": {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 5m0s restarting failed container",
                    }
                },
            }
        ],
    }
    kube.set_status("v1", "Pod", "p", crashing, "web")
    assert status_of(applier, objects, "Pod") == (
        "Degraded",
        "back-off 5m0s restarting failed container",
    )

    ready = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "app", "ready": True, "state": {"running": {}}}],
    }
    kube.set_status("v1", "Pod", "p", ready, "web")
    assert status_of(applier, objects, "Pod")[0] == "Healthy"

    failed = {
        "phase": "Failed",
        "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 3}}}],
    }
    kube.set_status("v1", "Pod", "p", failed, "web")
    assert status_of(applier, objects, "Pod") == (
        "Degraded",
        "container 'app' failed with exit code 3",
    )


def test_a_run_once_pod_is_not_degraded_by_a_waiting_image(kube, applier):
    objects = deployed(kube, applier, pod("Never"))
    pulling = {
        "phase": "Pending",
        "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ErrImagePull"}}}],
    }
    kube.set_status("v1", "Pod", "p", pulling, "web")
    assert status_of(applier, objects, "Pod")[0] == "Progressing"


def test_other_kinds_are_healthy_once_they_exist_and_missing_is_degraded(kube, applier):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "web"}}
    objects = deployed(kube, applier, cm)
    assert applier.health(APP, objects).status == "Healthy"

    with kube.api_client() as api_client:
        client.CoreV1Api(api_client).delete_namespaced_config_map("c", "web")

    report = applier.health(APP, objects)
    assert report.status == "Degraded"
    assert [(o.kind, o.message) for o in report.unhealthy] == [
        ("ConfigMap", "missing from the cluster")
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_healthy_times_out_as_degraded_with_a_fake_clock(kube, applier):
    objects = deployed(kube, applier, workload("Deployment", "web"))
    clock = FakeClock()

    report = applier.wait_healthy(
        APP, objects, timeout_s=10, poll_s=3, sleep=clock.sleep, clock=clock
    )

    assert report.timed_out and report.status == "Degraded"
    (stuck,) = report.unhealthy
    assert stuck.kind == "Deployment" and stuck.message.startswith("not healthy after 10s: ")
    assert clock.sleeps == [3, 3, 3, 1]


def test_wait_healthy_returns_once_the_rollout_finishes(kube, applier):
    objects = deployed(kube, applier, workload("Deployment", "web"))
    clock = FakeClock()
    done = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}

    def controller_sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 2:
            kube.set_status("apps/v1", "Deployment", "web", done, "web")

    report = applier.wait_healthy(
        APP, objects, timeout_s=60, poll_s=5, sleep=controller_sleep, clock=clock
    )

    assert report.status == "Healthy" and not report.timed_out
    assert clock.sleeps == [5, 5]

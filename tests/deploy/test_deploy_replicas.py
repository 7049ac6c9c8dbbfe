"""The bot's manifests for several replicas: rendered with the real ``kubectl kustomize``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"


def render(path: str) -> list[dict]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / path)], capture_output=True, check=True, timeout=60
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(objects: list[dict], kind: str, name: str) -> dict | None:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) <= 1
    return found[0] if found else None


def bot(objects: list[dict]) -> tuple[dict, dict]:
    deployment = find(objects, "Deployment", "sluice")
    assert deployment is not None
    return deployment["spec"], deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="module")
def default() -> list[dict]:
    return render("deploy")


def test_bot_runs_two_replicas_on_postgres_from_a_secret(default):
    spec, container = bot(default)
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    env = {e["name"]: e for e in container["env"]}
    assert env["SLUICE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "sluice-database",
        "key": "url",
    }
    assert "value" not in env["SLUICE_DATABASE_URL"]  # never a literal URL (password) in git
    key_file = env["SLUICE_FINGERPRINT_KEY_FILE"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes[mounts[str(Path(key_file).parent)]]["secret"]["secretName"] == (
        "sluice-fingerprint"
    )
    assert env["SLUICE_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # No shared disk: mirrors and caches are per pod.
    assert "emptyDir" in volumes[mounts["/var/lib/sluice"]]
    assert not [o for o in default if o["kind"] == "PersistentVolumeClaim"]


def test_a_disruption_takes_at_most_one_bot_replica(default):
    pdb = find(default, "PodDisruptionBudget", "sluice")
    assert pdb is not None and pdb["spec"]["minAvailable"] == 1
    spec, _ = bot(default)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        spec["template"]["metadata"]["labels"].items()
    )


def test_bot_may_reach_postgres(default):
    policy = find(default, "NetworkPolicy", "sluice")
    assert policy is not None
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert 5432 in ports


def test_single_node_overlay_is_one_replica_on_sqlite():
    objects = render("deploy/overlays/single-node")
    spec, container = bot(objects)
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    names = {e["name"] for e in container["env"]}
    assert "SLUICE_DATABASE_URL" not in names and "SLUICE_FINGERPRINT_KEY_FILE" not in names
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes["data"] == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": "sluice-data"},
    }
    assert "fingerprint" not in volumes
    assert find(objects, "PodDisruptionBudget", "sluice") is None
    assert find(objects, "PersistentVolumeClaim", "sluice-data") is not None


def test_postgres_overlay_is_one_hardened_pod_only_the_bot_reaches():
    objects = render("deploy/overlays/postgres")
    database = find(objects, "StatefulSet", "sluice-postgres")
    assert database is not None and database["spec"]["replicas"] == 1
    pod = database["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    password = next(e for e in container["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"]["name"] == "sluice-postgres"
    policy = find(objects, "NetworkPolicy", "sluice-postgres")
    assert policy is not None
    (rule,) = policy["spec"]["ingress"]
    assert [f["podSelector"]["matchLabels"] for f in rule["from"]] == [
        {"app.kubernetes.io/name": "sluice", "app.kubernetes.io/component": "bot"}
    ]
    service = find(objects, "Service", "sluice-postgres")
    assert service is not None
    assert (
        service["spec"]["selector"].items()
        <= database["spec"]["template"]["metadata"]["labels"].items()
    )

"""Batched Kustomize renders (bot.render.batch) against one real ``kubectl kustomize`` per app.

Every object of every app must come out byte-identical (same JSON, same key order) to
the per-app render, and every error must be the per-app one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.models import App
from bot.render import RenderCache, RenderEngine, RenderLimits

DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations: {{zeta: "1", alpha: "2"}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      serviceAccountName: runner
      containers:
      - name: main
        image: registry.example.com/{name}:1.0
        envFrom:
        - configMapRef: {{name: settings}}
        - secretRef: {{name: creds}}
        volumeMounts: [{{name: conf, mountPath: /etc/conf}}]
      volumes:
      - name: conf
        configMap: {{name: settings}}
"""
RBAC = """apiVersion: v1
kind: ServiceAccount
metadata: {name: runner}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: runner
  annotations: {}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: runner}
subjects:
- {kind: ServiceAccount, name: runner}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: runner}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get]}]
"""


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def corpus(root: Path) -> list[App]:
    """Generators with hash suffixes, namePrefix/suffix, patches, components, shared bases."""
    write(root, "base/deploy.yaml", DEPLOY.format(name="web"))
    write(root, "base/rbac.yaml", RBAC)
    write(root, "base/settings.env", "MODE=base\nLEVEL=1\n")
    write(
        root,
        "base/kustomization.yaml",
        "resources: [deploy.yaml, rbac.yaml]\n"
        "configMapGenerator:\n- name: settings\n  envs: [settings.env]\n"
        "secretGenerator:\n- name: creds\n  literals: [user=admin, token=s3cr3t-value]\n",
    )
    write(
        root,
        "components/probes/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
        "patches:\n- target: {kind: Deployment}\n  patch: |-\n"
        "    - op: add\n      path: /spec/template/spec/containers/0/readinessProbe\n"
        "      value: {httpGet: {path: /ready, port: 8080}}\n"
        "configMapGenerator:\n- name: probes\n  literals: [path=/ready]\n",
    )
    for env, replicas in (("prod", 3), ("staging", 1)):
        write(root, f"apps/web/{env}/replicas.yaml", _replicas(replicas))
        write(
            root,
            f"apps/web/{env}/kustomization.yaml",
            f"resources: [../../../base]\nnamespace: web-{env}\nnamePrefix: {env}-\n"
            f"labels:\n- pairs: {{env: {env}}}\n  includeSelectors: true\n"
            "components: [../../../components/probes]\n"
            "patches:\n- path: replicas.yaml\n"
            "configMapGenerator:\n- name: settings\n  behavior: merge\n"
            f"  literals: [MODE={env}]\n"
            f"images:\n- name: registry.example.com/web\n  newTag: '2.{replicas}'\n",
        )
    write(root, "apps/api/deploy.yaml", DEPLOY.format(name="api"))
    write(root, "apps/api/rbac.yaml", RBAC)
    write(root, "apps/api/app.properties", "threads=4\n")
    write(
        root,
        "apps/api/kustomization.yaml",
        "resources: [deploy.yaml, rbac.yaml]\nnameSuffix: -v2\n"
        "commonAnnotations: {team: api}\n"
        "configMapGenerator:\n- name: settings\n  files: [app.properties]\n"
        "secretGenerator:\n- name: creds\n  type: Opaque\n  literals: [k=v]\n"
        "replacements:\n- source: {kind: ConfigMap, name: settings, fieldPath: metadata.name}\n"
        "  targets:\n  - select: {kind: Deployment}\n"
        "    fieldPaths: [metadata.annotations.settings]\n"
        "    options: {create: true}\n",
    )
    write(root, "apps/plain/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: p}\n")
    return [
        App(name="web-prod", path="apps/web/prod"),
        App(name="api", path="apps/api", namespace="api"),
        App(name="plain", path="apps/plain"),
        App(name="web-staging", path="apps/web/staging"),
    ]


def _replicas(count: int) -> str:
    return f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec: {{replicas: {count}}}\n"


def _exact(rendered) -> tuple[str | None, str]:
    return rendered.error, json.dumps(rendered.objects)


def per_app(apps: list[App], root: Path) -> list[tuple[str | None, str]]:
    with RenderEngine() as engine:
        return [_exact(engine.render(app, root)) for app in apps]


class CountingEngine(RenderEngine):
    """Counts the kubectl processes the sandbox starts."""

    def __init__(self) -> None:
        super().__init__()
        self.processes = 0
        run = self.sandbox.run

        def counted(command, **kwargs):
            if "kustomize" in command:
                self.processes += 1
            return run(command, **kwargs)

        self.sandbox.run = counted  # type: ignore[method-assign]


def batched(
    apps: list[App], root: Path, workers: int = 1, **kw
) -> tuple[list[tuple[str | None, str]], int]:
    with CountingEngine() as engine:
        results = engine.render_many(apps, root, workers=workers, **kw)
        assert [r.app.name for r in results] == [a.name for a in apps]
        return [_exact(r) for r in results], engine.processes


def test_every_object_is_byte_identical_to_the_per_app_render(tmp_path: Path) -> None:
    apps = corpus(tmp_path)
    together, processes = batched(apps, tmp_path)
    alone = per_app(apps, tmp_path)
    assert together == alone
    assert all(error is None for error, _ in alone)
    assert processes == 1  # three Kustomize apps, one kubectl


def test_batched_renders_fill_the_cache_per_app(tmp_path: Path) -> None:
    apps = corpus(tmp_path)
    cache = RenderCache(tmp_path / ".cache")
    first, _ = batched(apps, tmp_path, cache=cache)
    again, processes = batched(apps, tmp_path, cache=cache)
    assert again == first == per_app(apps, tmp_path)
    assert processes == 0


def test_a_clash_of_resource_ids_falls_back_to_per_app_renders(tmp_path: Path) -> None:
    apps = corpus(tmp_path)
    # Same ConfigMap, same namespace, from two apps: one build cannot hold both.
    for name in ("one", "two"):
        write(
            tmp_path,
            f"clash/{name}/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: same}\n",
        )
        write(tmp_path, f"clash/{name}/kustomization.yaml", "resources: [cm.yaml]\nnamespace: x\n")
    apps += [App(name="one", path="clash/one"), App(name="two", path="clash/two")]
    together, processes = batched(apps, tmp_path)
    assert together == per_app(apps, tmp_path)
    assert processes == 1 + 5  # the failed batch, then each Kustomize app alone


def test_a_reference_to_another_apps_generated_name_is_rendered_alone(tmp_path: Path) -> None:
    # kustomize's name-reference fix-up would point "cfg" at the other app's cfg-<hash>.
    write(
        tmp_path, "gen/kustomization.yaml", "configMapGenerator:\n- name: cfg\n  literals: [a=b]\n"
    )
    write(
        tmp_path,
        "user/pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "  - {name: c, image: i, envFrom: [{configMapRef: {name: cfg}}]}\n",
    )
    write(tmp_path, "user/kustomization.yaml", "resources: [pod.yaml]\n")
    apps = [App(name="gen", path="gen"), App(name="user", path="user")]
    together, processes = batched(apps, tmp_path)
    alone = per_app(apps, tmp_path)
    assert together == alone
    assert '"name": "cfg"' in alone[1][1]
    assert processes == 2  # the batch, then "user" alone


def test_the_error_shown_is_the_per_app_one(tmp_path: Path) -> None:
    apps = corpus(tmp_path)
    write(tmp_path, "broken/kustomization.yaml", "resources: [cm.yaml]\npatches:\n- path: p.yaml\n")
    write(tmp_path, "broken/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n")
    write(tmp_path, "broken/p.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nothere}\n")
    apps.append(App(name="broken", path="broken"))
    together, _ = batched(apps, tmp_path)
    alone = per_app(apps, tmp_path)
    assert together == alone
    assert alone[-1][0] and "kustomize failed" in alone[-1][0]


def test_a_batch_over_a_sandbox_limit_falls_back_so_each_app_gets_its_own_result(
    tmp_path: Path,
) -> None:
    apps = corpus(tmp_path)
    # Each app's output fits; the three together do not.
    limits = RenderLimits(max_output_bytes=9000)
    with RenderEngine() as engine:
        alone = [_exact(engine.render(app, tmp_path, limits=limits)) for app in apps]
    together, processes = batched(apps, tmp_path, limits=limits)
    assert together == alone
    assert all(error is None for error, _ in alone)
    assert processes == 1 + 3


@pytest.mark.parametrize("field", ["vars", "sortOptions", "buildMetadata"])
def test_apps_using_build_wide_fields_are_never_batched(tmp_path: Path, field: str) -> None:
    apps = corpus(tmp_path)
    value = {
        "vars": "vars:\n- name: X\n  objref: {kind: ServiceAccount, name: runner, apiVersion: v1}\n",
        "sortOptions": "sortOptions: {order: fifo}\n",
        "buildMetadata": "buildMetadata: [originAnnotations]\n",
    }[field]
    write(
        tmp_path,
        "apps/api/kustomization.yaml",
        (tmp_path / "apps/api/kustomization.yaml").read_text() + value,
    )
    together, processes = batched(apps, tmp_path)
    assert together == per_app(apps, tmp_path)
    assert processes == 2  # web-prod and web-staging together, api alone


@pytest.mark.parametrize(
    "text",
    [
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata: {}\nx: "
        + "[" * 120
        + "]" * 120
        + "\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\n"
        + "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
            for i in range(6)
        ),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: broken\n",
    ],
    ids=["too-deep", "alias-bomb", "bad-yaml"],
)
def test_inputs_only_sluice_refuses_get_the_per_app_error(tmp_path: Path, text: str) -> None:
    apps = corpus(tmp_path)
    write(tmp_path, "odd/cm.yaml", text)
    write(tmp_path, "odd/kustomization.yaml", "resources: [cm.yaml]\n")
    apps.insert(1, App(name="odd", path="odd"))
    limits = RenderLimits(max_memory_bytes=256 * 1024 * 1024, timeout_s=20)
    together, _ = batched(apps, tmp_path, limits=limits)
    with RenderEngine() as engine:
        alone = [_exact(engine.render(app, tmp_path, limits=limits)) for app in apps]
    assert together == alone
    assert alone[1][0] is not None and alone[1][0].startswith("odd/cm.yaml")


def test_overlays_of_one_base_go_to_different_batches_when_there_is_room(tmp_path: Path) -> None:
    # Same names, namespace set only in .sluice.yaml: in one build they would clash.
    write(tmp_path, "shared/base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(tmp_path, "shared/base/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n")
    apps = []
    for name in ("one", "two"):
        write(tmp_path, f"shared/{name}/kustomization.yaml", "resources: [../base]\n")
        apps.append(App(name=name, path=f"shared/{name}", namespace=name))
    for name in ("a", "b"):
        write(
            tmp_path,
            f"own/{name}/cm.yaml",
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\n",
        )
        write(tmp_path, f"own/{name}/kustomization.yaml", "resources: [cm.yaml]\n")
        apps.append(App(name=name, path=f"own/{name}"))
    together, processes = batched(apps, tmp_path, workers=2)
    assert together == per_app(apps, tmp_path)
    assert processes == 2  # two batches, no clash, no per-app fallback

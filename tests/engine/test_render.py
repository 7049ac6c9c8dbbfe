"""bot.render against real kubectl kustomize and Helm's real engine, on fixtures in tmp_path."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bot.models import App, HelmSettings
from bot.render import (
    RenderCache,
    RenderEngine,
    RenderError,
    RenderLimits,
    load_manifests,
    render_app,
    render_apps,
    render_inputs,
)

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value}\n"


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def names(rendered) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An exported tree: a Kustomize base with two overlays, a chart, and plain manifests."""
    root = tmp_path / "export"
    write(root, "apps/web/base/kustomization.yaml", "resources: [deploy.yaml, svc.yaml]\n")
    write(
        root,
        "apps/web/base/deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
        "spec:\n  replicas: 1\n  template:\n    spec:\n"
        "      containers: [{name: web, image: 'nginx:1.27'}]\n",
    )
    write(root, "apps/web/base/svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n")
    for env, replicas in (("prod", 3), ("staging", 1)):
        write(
            root,
            f"apps/web/overlays/{env}/kustomization.yaml",
            f"resources: [../../base]\nnamePrefix: {env}-\nnamespace: web-{env}\n"
            "patches:\n- path: replicas.yaml\n",
        )
        write(
            root,
            f"apps/web/overlays/{env}/replicas.yaml",
            f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n"
            f"spec: {{replicas: {replicas}}}\n",
        )
    write(root, "charts/api/Chart.yaml", "apiVersion: v2\nname: api\nversion: 1.0.0\n")
    write(root, "charts/api/values.yaml", "replicas: 1\ncolor: blue\nimage: {tag: '1.0'}\n")
    write(
        root,
        "charts/api/templates/deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n"
        "  namespace: {{ .Release.Namespace }}\n"
        "  labels: {color: {{ .Values.color | quote }}, tag: {{ .Values.image.tag | quote }}}\n"
        "spec: {replicas: {{ .Values.replicas }}}\n"
        "---\n# a document with only a comment\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: {{ .Release.Name }}-svc}\n",
    )
    write(root, "charts/api/templates/NOTES.txt", "Installed {{ .Release.Name }}.\n")
    write(root, "charts/api/templates/_helpers.tpl", '{{- define "api.x" }}x{{ end }}\n')
    write(root, "envs/prod/api-values.yaml", "replicas: 4\nimage: {tag: '2.0'}\n")
    write(root, "envs/prod/api-override.yaml", "color: green\n")
    write(
        root,
        "plain/app/10-list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: from-list-1}}\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: from-list-2}}\n"
        "---\n---\n" + CM.format(name="second-doc", value="v"),
    )
    write(root, "plain/app/00-first.yml", CM.format(name="first", value="v"))
    write(
        root,
        "plain/app/nested/obj.json",
        '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-json"}}',
    )
    write(root, "plain/app/README.md", "not a manifest: [\n")
    write(root, "plain/app/empty.yaml", "")
    return root


def prod_app() -> App:
    return App(name="web-prod", path="apps/web/overlays/prod")


def api_app(**helm) -> App:
    settings = HelmSettings(**({"values": ("/envs/prod/api-values.yaml",)} | helm))
    return App(name="api", path="charts/api", namespace="api", helm=settings)


# --- plain ---------------------------------------------------------------------------------


def test_plain_reads_every_manifest_in_sorted_order_and_unpacks_lists(repo: Path) -> None:
    result = render_app(App(name="p", path="plain/app"), repo)

    assert result.error is None
    assert result.renderer == "plain"
    assert names(result) == [
        ("ConfigMap", "first"),
        ("ConfigMap", "from-list-1"),
        ("ConfigMap", "from-list-2"),
        ("ConfigMap", "second-doc"),
        ("ConfigMap", "from-json"),
    ]
    assert result.inputs == {
        "plain/app/00-first.yml",
        "plain/app/10-list.yaml",
        "plain/app/empty.yaml",
        "plain/app/nested/obj.json",
    }


def test_plain_refuses_a_document_that_is_not_an_object(repo: Path) -> None:
    write(repo, "plain/app/bad.yaml", CM.format(name="ok", value="v") + "---\n- just\n- a list\n")
    result = render_app(App(name="p", path="plain/app"), repo)
    assert result.objects == []
    assert result.error == (
        "plain/app/bad.yaml: document at line 8: expected a mapping (a Kubernetes object), "
        "got a list"
    )


def test_plain_refuses_an_object_without_a_name(repo: Path) -> None:
    write(repo, "plain/app/noname.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")
    result = render_app(App(name="p", path="plain/app"), repo)
    assert (
        result.error == "plain/app/noname.yaml: document at line 1: ConfigMap has no metadata.name"
    )


def test_broken_yaml_names_file_and_line_but_not_the_content(repo: Path) -> None:
    write(
        repo,
        "plain/app/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData:\n"
        "  password: hunter2: 'sw0rdfish\n",
    )
    result = render_app(App(name="p", path="plain/app"), repo)
    assert result.error is not None
    assert result.error.startswith("plain/app/secret.yaml: line 5, column ")
    assert "hunter2" not in result.error and "sw0rdfish" not in result.error


def test_yaml_error_with_quoted_content_is_redacted() -> None:
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata: !hunter2 abc\n"
    with pytest.raises(RenderError) as caught:
        load_manifests(text, "s.yaml", RenderLimits())
    assert str(caught.value).startswith("s.yaml: line 4, column 7: ")
    assert "hunter2" not in str(caught.value)


# --- kustomize -----------------------------------------------------------------------------


def test_kustomize_overlay_over_shared_base(repo: Path) -> None:
    result = render_app(prod_app(), repo)

    assert result.error is None
    assert result.renderer == "kustomize"
    by_kind = {o["kind"]: o for o in result.objects}
    assert by_kind["Deployment"]["metadata"] == {"name": "prod-web", "namespace": "web-prod"}
    assert by_kind["Deployment"]["spec"]["replicas"] == 3
    assert by_kind["Service"]["metadata"]["name"] == "prod-web"
    assert result.inputs == {
        "apps/web/overlays/prod/kustomization.yaml",
        "apps/web/overlays/prod/replicas.yaml",
        "apps/web/base/kustomization.yaml",
        "apps/web/base/deploy.yaml",
        "apps/web/base/svc.yaml",
    }


def test_kustomize_inputs_follow_generators_components_and_patch_files(repo: Path) -> None:
    write(
        repo,
        "apps/gen/kustomization.yaml",
        "resources: [../web/base]\ncomponents: [../comp]\n"
        "configMapGenerator:\n- name: cfg\n  files: [app.properties, extra=conf/extra.txt]\n"
        "  envs: [vars.env]\n  literals: [mode=fast]\n"
        "patchesStrategicMerge: [smp.yaml]\n",
    )
    write(repo, "apps/gen/app.properties", "a=1\n")
    write(repo, "apps/gen/conf/extra.txt", "extra\n")
    write(repo, "apps/gen/vars.env", "B=2\n")
    write(
        repo,
        "apps/gen/smp.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {smp: 'yes'}}\n",
    )
    write(
        repo,
        "apps/comp/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
        "patches:\n- path: label.yaml\n  target: {kind: Deployment}\n",
    )
    write(
        repo,
        "apps/comp/label.yaml",
        "- {op: add, path: /metadata/labels, value: {component: 'yes'}}\n",
    )

    result = render_app(App(name="gen", path="apps/gen"), repo)

    assert result.error is None, result.error
    by_kind = {o["kind"]: o for o in result.objects}
    assert by_kind["Deployment"]["metadata"]["labels"] == {"component": "yes"}
    assert by_kind["Service"]["metadata"]["labels"] == {"smp": "yes"}
    assert by_kind["ConfigMap"]["data"] == {
        "app.properties": "a=1\n",
        "extra": "extra\n",
        "B": "2",
        "mode": "fast",
    }
    assert {
        "apps/gen/app.properties",
        "apps/gen/conf/extra.txt",
        "apps/gen/vars.env",
        "apps/gen/smp.yaml",
        "apps/comp/kustomization.yaml",
        "apps/comp/label.yaml",
        "apps/web/base/deploy.yaml",
    } <= result.inputs


def test_kustomize_file_outside_the_kustomization_root_is_refused(repo: Path) -> None:
    write(repo, "apps/up/kustomization.yaml", "resources: [../web/base/deploy.yaml]\n")
    result = render_app(App(name="up", path="apps/up"), repo)
    assert result.objects == []
    assert result.error == (
        "apps/up/kustomization.yaml: resources: '../web/base/deploy.yaml' is outside the "
        "kustomization directory; kustomize only loads files from below it (refer to a "
        "directory with its own kustomization)"
    )


def test_kustomize_error_from_kubectl_is_reported_on_the_app(repo: Path) -> None:
    write(repo, "apps/dup/kustomization.yaml", "resources: [a.yaml, b.yaml]\n")
    for name in ("a", "b"):
        write(
            repo,
            f"apps/dup/{name}.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
        )
    result = render_app(App(name="dup", path="apps/dup"), repo)
    assert result.objects == []
    assert result.error is not None
    assert result.error.startswith("apps/dup: kustomize failed: ")
    assert "already registered id: Deployment.v1.apps/web" in result.error
    assert str(repo) not in result.error


def test_secret_generator_literal_is_never_echoed(repo: Path) -> None:
    write(
        repo,
        "apps/sec/kustomization.yaml",
        "secretGenerator:\n- name: db\n  literals: [hunter2-no-equals-sign]\n",
    )
    result = render_app(App(name="sec", path="apps/sec"), repo)
    assert result.error == (
        "apps/sec/kustomization.yaml: secretGenerator: literals[0] must have the form key=value"
    )


def test_kubectl_error_quoting_a_secret_value_is_scrubbed(repo: Path) -> None:
    write(
        repo,
        "apps/rep/kustomization.yaml",
        "resources: [s.yaml]\nreplacements:\n"
        "- source: {kind: Secret, name: db, fieldPath: stringData.password}\n"
        "  targets:\n  - select: {kind: Secret, name: db}\n"
        "    fieldPaths: [stringData.password.nope]\n",
    )
    write(
        repo,
        "apps/rep/s.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\n"
        "stringData: {password: sw0rdfish-actual}\n",
    )
    result = render_app(App(name="rep", path="apps/rep"), repo)
    assert result.error is not None
    # kubectl itself prints "node contents: sw0rdfish-actual" here.
    assert result.error.startswith("apps/rep: kustomize failed: unable to find field")
    assert "sw0rdfish" not in result.error
    assert "***" in result.error


# --- helm ----------------------------------------------------------------------------------


def test_helm_renders_with_release_namespace_and_values_files_in_order(repo: Path) -> None:
    app = api_app(values=("/envs/prod/api-values.yaml", "../../envs/prod/api-override.yaml"))
    result = render_app(app, repo)

    assert result.error is None, result.error
    assert result.renderer == "helm"
    assert names(result) == [("Deployment", "api"), ("Service", "api-svc")]
    deploy = result.objects[0]
    assert deploy["metadata"]["namespace"] == "api"
    assert deploy["metadata"]["labels"] == {"color": "green", "tag": "2.0"}
    assert deploy["spec"]["replicas"] == 4
    assert result.inputs == {
        "charts/api/Chart.yaml",
        "charts/api/values.yaml",
        "charts/api/templates/deploy.yaml",
        "charts/api/templates/NOTES.txt",
        "charts/api/templates/_helpers.tpl",
        "envs/prod/api-values.yaml",
        "envs/prod/api-override.yaml",
    }


def test_helm_release_defaults_to_app_name_and_namespace_to_default(repo: Path) -> None:
    result = render_app(App(name="api-two", path="charts/api"), repo)
    assert names(result) == [("Deployment", "api-two"), ("Service", "api-two-svc")]
    assert result.objects[0]["metadata"]["namespace"] == "default"
    assert result.objects[0]["spec"]["replicas"] == 1

    explicit = render_app(api_app(release="custom"), repo)
    assert names(explicit)[0] == ("Deployment", "custom")


def test_helm_includes_crds_and_vendored_subcharts(repo: Path) -> None:
    write(
        repo,
        "charts/api/Chart.yaml",
        "apiVersion: v2\nname: api\nversion: 1.0.0\n"
        "dependencies:\n- {name: sub, version: 0.1.0, repository: 'https://charts.example.com'}\n",
    )
    write(repo, "charts/api/charts/sub/Chart.yaml", "apiVersion: v2\nname: sub\nversion: 0.1.0\n")
    write(repo, "charts/api/charts/sub/templates/cm.yaml", CM.format(name="from-sub", value="s"))
    write(
        repo,
        "charts/api/crds/widget.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        "metadata: {name: widgets.example.com}\n",
    )
    result = render_app(api_app(), repo)
    assert result.error is None, result.error
    assert names(result) == [
        ("CustomResourceDefinition", "widgets.example.com"),
        ("ConfigMap", "from-sub"),
        ("Deployment", "api"),
        ("Service", "api-svc"),
    ]


def test_helm_refuses_a_dependency_that_is_not_vendored(repo: Path) -> None:
    write(
        repo,
        "charts/api/Chart.yaml",
        "apiVersion: v2\nname: api\nversion: 1.0.0\n"
        "dependencies:\n- {name: redis, version: 1.0.0, repository: 'https://charts.example.com'}\n",
    )
    result = render_app(api_app(), repo)
    assert result.objects == []
    assert result.error is not None
    assert "charts/api/Chart.yaml: dependency 'redis' is not vendored in charts/" in result.error


def test_failing_chart_is_an_error_and_other_apps_still_render(repo: Path) -> None:
    write(repo, "charts/broken/Chart.yaml", "apiVersion: v2\nname: broken\nversion: 1.0.0\n")
    write(
        repo,
        "charts/broken/templates/cm.yaml",
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ required "set name" .Values.name }}\n',
    )
    apps = [App(name="broken", path="charts/broken"), api_app(), prod_app()]

    results = render_apps(apps, repo, workers=3)

    assert [r.app.name for r in results] == ["broken", "api", "web-prod"]
    assert results[0].objects == []
    assert results[0].renderer == "helm"
    assert results[0].error is not None
    assert results[0].error.startswith("charts/broken: helm: ")
    assert "set name" in results[0].error
    assert results[1].error is None and len(results[1].objects) == 2
    assert results[2].error is None and len(results[2].objects) == 2


def test_helm_renders_concurrently_without_mixing_results(repo: Path) -> None:
    apps = [App(name=f"api-{i}", path="charts/api") for i in range(40)]
    results = render_apps(apps, repo, workers=8)
    assert [r.objects[0]["metadata"]["name"] for r in results] == [a.name for a in apps]


# --- auto selection ------------------------------------------------------------------------


def test_auto_picks_kustomize_then_helm_then_plain(repo: Path) -> None:
    write(repo, "both/Chart.yaml", "apiVersion: v2\nname: both\nversion: 1.0.0\n")
    write(repo, "both/kustomization.yml", "resources: [cm.yaml]\n")
    write(repo, "both/cm.yaml", CM.format(name="from-kustomize", value="v"))
    write(repo, "capital/Kustomization", "resources: [cm.yaml]\n")
    write(repo, "capital/cm.yaml", CM.format(name="capital", value="v"))
    apps = [
        App(name="k", path="apps/web/overlays/staging"),
        App(name="h", path="charts/api"),
        App(name="p", path="plain/app"),
        App(name="both", path="both"),
        App(name="capital", path="capital"),
    ]
    results = render_apps(apps, repo)
    assert [r.renderer for r in results] == ["kustomize", "helm", "plain", "kustomize", "kustomize"]
    assert all(r.error is None for r in results), [r.error for r in results]
    assert names(results[3]) == [("ConfigMap", "from-kustomize")]


def test_explicit_renderer_wins_and_is_checked(repo: Path) -> None:
    plain = render_app(App(name="x", path="apps/web/base", renderer="plain"), repo)
    assert plain.renderer == "plain"
    # Read as plain files, the kustomization itself is not a Kubernetes object.
    assert plain.error == (
        "apps/web/base/kustomization.yaml: document at line 1: object has no apiVersion"
    )
    missing = render_app(App(name="x", path="plain/app", renderer="helm"), repo)
    assert missing.error == "plain/app: renderer is helm but there is no Chart.yaml"


# --- confinement ---------------------------------------------------------------------------


def test_app_path_escaping_the_export_is_refused(repo: Path) -> None:
    result = render_app(App(name="x", path="../outside"), repo)
    assert result.error == "path: '../outside' leaves the repository"
    assert result.objects == []


def test_symlink_out_of_the_export_is_refused(repo: Path, tmp_path: Path) -> None:
    outside = write(tmp_path, "outside/secret.yaml", CM.format(name="stolen", value="s3cret"))
    os.symlink(outside, repo / "plain/app/link.yaml")
    os.symlink(outside.parent, repo / "charts/api/templates/linked-dir")

    plain = render_app(App(name="p", path="plain/app"), repo)
    helm = render_app(api_app(), repo)

    assert plain.error == "plain/app/link.yaml resolves outside the repository (symlink)"
    assert helm.error == (
        "charts/api/templates/linked-dir resolves outside the repository (symlink)"
    )
    assert plain.objects == helm.objects == []


def test_symlink_inside_the_export_is_followed_and_tracked(repo: Path) -> None:
    write(repo, "shared/cm.yaml", CM.format(name="shared", value="v"))
    os.symlink("../../shared/cm.yaml", repo / "plain/app/shared.yaml")
    result = render_app(App(name="p", path="plain/app"), repo)
    assert result.error is None
    assert ("ConfigMap", "shared") in names(result)
    assert {"plain/app/shared.yaml", "shared/cm.yaml"} <= result.inputs


def test_kustomize_reference_outside_the_export_is_refused(repo: Path) -> None:
    write(repo, "apps/esc/kustomization.yaml", "resources: [../../../etc]\n")
    result = render_app(App(name="esc", path="apps/esc"), repo)
    assert result.error == (
        "apps/esc/kustomization.yaml: resources: '../../../etc' leaves the repository"
    )


@pytest.mark.parametrize(
    "resource",
    [
        "https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.0.0",
        "github.com/example/repo/deploy?ref=main",
        "git@github.com:example/repo.git",
        "ssh://git@example.com/repo.git//base",
    ],
)
def test_kustomize_remote_resource_is_refused_before_kubectl_runs(
    repo: Path, resource: str
) -> None:
    write(repo, "apps/remote/kustomization.yaml", f"resources:\n- {resource}\n")
    engine = RenderEngine()
    result = render_app(App(name="r", path="apps/remote"), repo, engine=engine)
    assert result.error == (
        f"apps/remote/kustomization.yaml: resources: remote resource {resource!r} is not allowed"
    )
    assert engine.renders == 0


def test_kustomize_missing_local_resource_is_not_fetched(repo: Path) -> None:
    write(repo, "apps/missing/kustomization.yaml", "resources: [example.com/base]\n")
    result = render_app(App(name="m", path="apps/missing"), repo)
    assert result.error == (
        "apps/missing/kustomization.yaml: resources: 'example.com/base' not found in the "
        "repository (remote resources are not allowed)"
    )


def test_kustomize_exec_plugin_is_refused(repo: Path) -> None:
    write(
        repo, "apps/plug/kustomization.yaml", "resources: [../web/base]\ntransformers: [fn.yaml]\n"
    )
    write(
        repo,
        "apps/plug/fn.yaml",
        "apiVersion: example.com/v1\nkind: Evil\nmetadata:\n  name: evil\n  annotations:\n"
        "    config.kubernetes.io/function: |\n      exec:\n        path: /bin/sh\n",
    )
    engine = RenderEngine()
    result = render_app(App(name="plug", path="apps/plug"), repo, engine=engine)
    assert result.error == (
        "apps/plug/fn.yaml: Evil evil: exec and container KRM functions are not allowed"
    )
    assert engine.renders == 0


def test_kustomize_container_function_hidden_in_a_generator_kustomization_is_refused(
    repo: Path,
) -> None:
    write(repo, "apps/gen2/kustomization.yaml", "generators: [fns]\n")
    write(
        repo,
        "apps/gen2/fns/kustomization.yaml",
        "resources: [gen.yaml]\npatches: [{path: p.yaml}]\n",
    )
    write(
        repo,
        "apps/gen2/fns/gen.yaml",
        "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: cfg}\n",
    )
    write(
        repo,
        "apps/gen2/fns/p.yaml",
        "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata:\n  name: cfg\n"
        "  annotations:\n    config.kubernetes.io/function: 'container: {image: evil}'\n",
    )
    result = render_app(App(name="gen2", path="apps/gen2"), repo)
    assert result.error == (
        "apps/gen2/fns/p.yaml: exec and container KRM functions are not allowed"
    )


def test_kustomize_builtin_transformer_is_allowed(repo: Path) -> None:
    write(repo, "apps/lbl/kustomization.yaml", "resources: [../web/base]\ntransformers: [t.yaml]\n")
    write(
        repo,
        "apps/lbl/t.yaml",
        "apiVersion: builtin\nkind: LabelTransformer\nmetadata: {name: team}\n"
        "labels: {team: blue}\nfieldSpecs: [{path: metadata/labels, create: true}]\n",
    )
    result = render_app(App(name="lbl", path="apps/lbl"), repo)
    assert result.error is None, result.error
    assert all(o["metadata"]["labels"] == {"team": "blue"} for o in result.objects)


def test_kustomize_helm_charts_are_refused(repo: Path) -> None:
    write(
        repo,
        "apps/hc/kustomization.yaml",
        "helmCharts:\n- {name: redis, repo: 'https://charts.example.com', version: 1.0.0}\n",
    )
    result = render_app(App(name="hc", path="apps/hc"), repo)
    assert result.error is not None
    assert result.error.startswith("apps/hc/kustomization.yaml: helmCharts is not allowed")


def test_values_file_with_a_leading_slash_is_read_from_the_repo_root(repo: Path) -> None:
    result = render_app(api_app(values=("/etc/passwd",)), repo)
    assert result.error == (
        "helm.values: '/etc/passwd' not found (tried etc/passwd; values files are relative to "
        "the chart directory charts/api, a leading '/' means the repo root)"
    )
    assert result.renderer == "helm"


def test_values_file_relative_to_the_chart_directory(repo: Path) -> None:
    write(repo, "charts/api/values-prod.yaml", "replicas: 7\n")
    result = render_app(api_app(values=("values-prod.yaml",)), repo)
    assert result.error is None, result.error
    assert result.objects[0]["spec"]["replicas"] == 7
    assert "charts/api/values-prod.yaml" in result.inputs


def test_values_file_escaping_with_dotdot_is_refused(repo: Path, tmp_path: Path) -> None:
    write(tmp_path, "values.yaml", "replicas: 99\n")
    result = render_app(api_app(values=("../../../values.yaml",)), repo)
    assert result.error == "helm.values: '../../../values.yaml' leaves the repository"
    result = render_app(api_app(values=("/../values.yaml",)), repo)
    assert result.error == "helm.values: '../values.yaml' leaves the repository"


def test_values_file_symlinked_out_of_the_export_is_refused(repo: Path, tmp_path: Path) -> None:
    outside = write(tmp_path, "values.yaml", "replicas: 99\n")
    os.symlink(outside, repo / "envs/prod/evil.yaml")
    result = render_app(api_app(values=("/envs/prod/evil.yaml",)), repo)
    assert (
        result.error == "helm.values: envs/prod/evil.yaml resolves outside the repository (symlink)"
    )


# --- limits --------------------------------------------------------------------------------


def billion_laughs() -> str:
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: lol}", "data:"]
    lines.append('  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]')
    previous = "a"
    for anchor in "bcdefghi":
        lines.append(f"  {anchor}: &{anchor} [{', '.join([f'*{previous}'] * 9)}]")
        previous = anchor
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_quickly(repo: Path) -> None:
    write(repo, "plain/app/lol.yaml", billion_laughs())
    started = time.perf_counter()
    result = render_app(App(name="p", path="plain/app"), repo)
    elapsed = time.perf_counter() - started
    assert result.error is not None
    assert result.error.startswith("plain/app/lol.yaml: line ")
    assert "YAML aliases expand to more than 1000000 nodes" in result.error
    assert elapsed < 1.0


def test_alias_bomb_in_kustomize_resource_is_refused_before_kubectl(repo: Path) -> None:
    write(repo, "apps/lol/kustomization.yaml", "resources: [lol.yaml]\n")
    write(repo, "apps/lol/lol.yaml", billion_laughs())
    started = time.perf_counter()
    result = render_app(App(name="lol", path="apps/lol"), repo)
    assert result.error is not None and "alias bomb" in result.error
    assert time.perf_counter() - started < 1.0


def test_moderate_aliases_are_fine_and_recursive_ones_are_not() -> None:
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, labels: &l {a: b}}\n"
        "data: {copy: *l}\n"
    )
    assert load_manifests(text, "ok.yaml", RenderLimits())[0]["data"] == {"copy": {"a": "b"}}
    with pytest.raises(RenderError, match="rec.yaml: line 4: recursive YAML alias"):
        load_manifests(
            "apiVersion: v1\nkind: X\nmetadata: {name: x}\nspec: &a [*a]\n",
            "rec.yaml",
            RenderLimits(),
        )


def test_oversized_file_is_refused(repo: Path) -> None:
    write(repo, "plain/app/big.yaml", CM.format(name="big", value="x" * 2048))
    result = render_app(
        App(name="p", path="plain/app"), repo, limits=RenderLimits(max_file_bytes=1024)
    )
    assert result.objects == []
    assert result.error is not None
    assert result.error.startswith("plain/app/big.yaml: file is ")
    assert result.error.endswith("bytes, over the 1024-byte limit")


def test_oversized_chart_file_is_refused(repo: Path) -> None:
    write(repo, "charts/api/files/blob.txt", "x" * 4096)
    result = render_app(api_app(), repo, limits=RenderLimits(max_file_bytes=1024))
    assert result.error is not None
    assert result.error.startswith("charts/api/files/blob.txt: file is 4096 bytes")


def test_object_count_limit(repo: Path) -> None:
    many = "".join(CM.format(name=f"cm-{i}", value="v") + "---\n" for i in range(30))
    write(repo, "apps/many/kustomization.yaml", "resources: [many.yaml]\n")
    write(repo, "apps/many/many.yaml", many)
    write(repo, "plain/many/many.yaml", many)
    limits = RenderLimits(max_objects=20)
    kustomized = render_app(App(name="many", path="apps/many"), repo, limits=limits)
    plain = render_app(App(name="p", path="plain/many"), repo, limits=limits)
    assert kustomized.objects == plain.objects == []
    assert "more than 20 objects" in kustomized.error
    assert "more than 20 objects" in plain.error
    assert render_app(App(name="many", path="apps/many"), repo).error is None


def test_render_timeout_before_start(repo: Path) -> None:
    limits = RenderLimits(timeout_s=0.001)
    kustomized = render_app(prod_app(), repo, limits=limits)
    helm = render_app(api_app(), repo, limits=limits)
    assert kustomized.error == "apps/web/overlays/prod: render timed out after 0.001s"
    assert helm.error == "charts/api: render timed out after 0.001s"


def test_render_timeout_stops_a_running_render(repo: Path) -> None:
    # kubectl alone needs far more than 50 ms to start; the Helm loop runs for about 0.4 s.
    write(repo, "charts/slow/Chart.yaml", "apiVersion: v2\nname: slow\nversion: 0.1.0\n")
    write(
        repo,
        "charts/slow/templates/x.yaml",
        "{{- range until 600000 }}\n# {{ . }}\n{{- end }}\n",
    )
    limits = RenderLimits(timeout_s=0.05)
    for app in (prod_app(), App(name="slow", path="charts/slow")):
        started = time.perf_counter()
        result = render_app(app, repo, limits=limits)
        assert result.error == f"{app.path}: render timed out after 0.05s"
        assert time.perf_counter() - started < 0.5


# --- cache ---------------------------------------------------------------------------------


def test_cache_hit_skips_the_render(repo: Path) -> None:
    cache, engine = RenderCache(), RenderEngine()
    apps = [prod_app(), api_app(), App(name="p", path="plain/app")]

    first = render_apps(apps, repo, cache=cache, engine=engine)
    second = render_apps(apps, repo, cache=cache, engine=engine)

    assert engine.renders == 3
    assert cache.stats.hits == 3 and cache.stats.misses == 3
    assert [r.objects for r in first] == [r.objects for r in second]
    assert [r.inputs for r in first] == [r.inputs for r in second]


def test_disk_cache_is_shared_across_runs_and_exports(repo: Path, tmp_path: Path) -> None:
    import shutil

    head = tmp_path / "head"
    shutil.copytree(repo, head, symlinks=True)
    write(head, "README.md", "not an input of any app\n")
    cache_dir = tmp_path / "cache"

    run1 = RenderEngine()
    base_result = render_app(prod_app(), repo, cache=RenderCache(cache_dir), engine=run1)
    run2 = RenderEngine()
    head_result = render_app(prod_app(), head, cache=RenderCache(cache_dir), engine=run2)

    assert run1.renders == 1 and run2.renders == 0
    assert head_result.objects == base_result.objects

    # Changing an input (the shared base) is a miss and shows the new content.
    write(
        head,
        "apps/web/base/svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {new: 'yes'}}\n",
    )
    changed = render_app(prod_app(), head, cache=RenderCache(cache_dir), engine=run2)
    assert run2.renders == 1
    svc = next(o for o in changed.objects if o["kind"] == "Service")
    assert svc["metadata"]["labels"] == {"new": "yes"}


def test_cache_key_covers_helm_settings(repo: Path) -> None:
    cache, engine = RenderCache(), RenderEngine()
    one = render_app(api_app(release="one"), repo, cache=cache, engine=engine)
    two = render_app(api_app(release="two"), repo, cache=cache, engine=engine)
    assert engine.renders == 2
    assert names(one)[0] == ("Deployment", "one") and names(two)[0] == ("Deployment", "two")


def test_errors_are_not_cached(repo: Path) -> None:
    cache, engine = RenderCache(), RenderEngine()
    write(repo, "charts/api/templates/bad.yaml", '{{ fail "not yet" }}\n')
    assert render_app(api_app(), repo, cache=cache, engine=engine).error is not None
    assert render_app(api_app(), repo, cache=cache, engine=engine).error is not None
    assert engine.renders == 2


def test_same_app_rendered_once_when_requested_concurrently(repo: Path) -> None:
    cache, engine = RenderCache(), RenderEngine()
    results: list = []
    threads = [
        threading.Thread(
            target=lambda: results.append(render_app(prod_app(), repo, cache=cache, engine=engine))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.renders == 1
    assert len({str(r.objects) for r in results}) == 1


def test_render_inputs_matches_render(repo: Path) -> None:
    for app in (prod_app(), api_app(), App(name="p", path="plain/app")):
        assert render_inputs(app, repo) == render_app(app, repo).inputs

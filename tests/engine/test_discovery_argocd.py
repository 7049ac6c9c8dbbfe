"""Argo CD app-of-apps with an ApplicationSet git directory generator: discovered, rendered
as Argo CD renders it, and affected-app detection through bases and generator paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import DiscoverSettings
from bot.render import render_app
from bot.render.discovery.discover import discover_apps
from tests.discoverykit import REPO_URL, GitRepo, by_name, index

SLUICE = """
discover:
  repo_urls: ["https://github.com/acme/fleet*"]
  argocd: {paths: ["argocd/**"]}
signatures: {mode: "off"}
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, labels: {app: app}}
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers: [{name: app, image: "nginx:1.25"}]
"""

FILES = {
    ".sluice.yaml": SLUICE,
    "argocd/root.yaml": f"""
        apiVersion: argoproj.io/v1alpha1
        kind: Application
        metadata: {{name: root, namespace: argocd}}
        spec:
          project: default
          source: {{repoURL: "{REPO_URL}", path: argocd/apps, targetRevision: main}}
          destination: {{server: "https://kubernetes.default.svc", namespace: argocd}}
        """,
    "argocd/apps/services.yaml": f"""
        apiVersion: argoproj.io/v1alpha1
        kind: ApplicationSet
        metadata: {{name: services, namespace: argocd}}
        spec:
          generators:
            - git:
                repoURL: "{REPO_URL}"
                revision: main
                directories:
                  - path: apps/services/*
                  - path: apps/services/legacy
                    exclude: true
          template:
            metadata: {{name: "svc-{{{{path.basename}}}}"}}
            spec:
              project: default
              source:
                repoURL: "{REPO_URL}"
                targetRevision: main
                path: "{{{{path}}}}"
                kustomize:
                  namePrefix: "{{{{path.basename}}}}-"
                  commonLabels: {{tier: "{{{{path[1]}}}}"}}
              destination: {{server: "https://kubernetes.default.svc", namespace: "{{{{path.basename}}}}"}}
        """,
    "argocd/apps/platform.yaml": """
        apiVersion: argoproj.io/v1alpha1
        kind: Application
        metadata: {name: platform, namespace: argocd}
        spec:
          source:
            repoURL: git@github.com:acme/fleet.git
            path: platform/ingress
            kustomize:
              nameSuffix: -edge
              namespace: ingress
              images: ["nginx=registry.acme.dev/nginx:1.27"]
              patches:
                - target: {kind: Deployment}
                  patch: |-
                    - op: replace
                      path: /spec/replicas
                      value: 2
          destination: {namespace: ingress}
        """,
    "argocd/apps/raw.yaml": f"""
        apiVersion: argoproj.io/v1alpha1
        kind: Application
        metadata: {{name: raw, namespace: argocd}}
        spec:
          source:
            repoURL: "{REPO_URL}"
            path: raw
            directory: {{recurse: true, exclude: "{{skip.yaml,drafts/*}}"}}
          destination: {{namespace: raw}}
        """,
    "apps/base/kustomization.yaml": "resources: [deployment.yaml]\n",
    "apps/base/deployment.yaml": DEPLOYMENT,
    "apps/services/web/kustomization.yaml": "resources: [../../base]\n",
    "apps/services/api/kustomization.yaml": """
        resources: [../../base]
        patches:
          - target: {kind: Deployment}
            patch: |-
              - {op: replace, path: /spec/replicas, value: 3}
        """,
    "apps/services/legacy/kustomization.yaml": "resources: [../../base]\n",
    "platform/ingress/kustomization.yaml": "resources: [deployment.yaml]\n",
    "platform/ingress/deployment.yaml": DEPLOYMENT,
    "raw/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: top}\n",
    "raw/skip.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: skipped}\n",
    "raw/sub/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nested}\n",
    "raw/drafts/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: draft}\n",
    "README.md": "fleet\n",
}

SETTINGS = DiscoverSettings(argocd=("argocd/**",), repo_urls=("https://github.com/acme/fleet*",))


@pytest.fixture
def repo(tmp_path: Path) -> tuple[GitRepo, str]:
    repo = GitRepo(tmp_path / "fleet")
    repo.write(FILES)
    return repo, repo.commit("fleet")


def test_app_of_apps_and_generated_apps_are_discovered_with_argo_names(repo) -> None:
    found = discover_apps(repo[0].root, SETTINGS)
    assert found.errors == []
    assert [a.name for a in found.apps] == [
        "argocd:platform",
        "argocd:raw",
        "argocd:root",
        "argocd:svc-api",
        "argocd:svc-web",
    ]
    apps = {a.name: a for a in found.apps}
    assert apps["argocd:svc-api"].path == "apps/services/api"
    assert apps["argocd:svc-api"].namespace == "api"
    assert "argocd/apps/services.yaml" in apps["argocd:svc-api"].watch


def test_generated_app_renders_with_the_template_kustomize_options(repo) -> None:
    apps = {a.name: a for a in discover_apps(repo[0].root, SETTINGS).apps}
    result = render_app(apps["argocd:svc-api"], repo[0].root)
    assert result.error is None, result.error
    (deploy,) = result.objects
    assert deploy["metadata"]["name"] == "api-app"
    assert deploy["metadata"]["labels"] == {"app": "app", "tier": "services"}
    assert deploy["spec"]["selector"]["matchLabels"] == {"app": "app", "tier": "services"}
    assert deploy["spec"]["replicas"] == 3
    assert {"apps/base/deployment.yaml", "apps/services/api/kustomization.yaml"} <= result.inputs


def test_kustomize_images_suffix_namespace_and_patches_apply(repo) -> None:
    apps = {a.name: a for a in discover_apps(repo[0].root, SETTINGS).apps}
    result = render_app(apps["argocd:platform"], repo[0].root)
    assert result.error is None, result.error
    objects = index(result.objects)
    deploy = objects[("Deployment", "ingress", "app-edge")]
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.acme.dev/nginx:1.27"
    )
    assert deploy["spec"]["replicas"] == 2


def test_directory_source_recurses_and_excludes_like_argo(repo) -> None:
    apps = {a.name: a for a in discover_apps(repo[0].root, SETTINGS).apps}
    result = render_app(apps["argocd:raw"], repo[0].root)
    assert result.error is None, result.error
    assert sorted(o["metadata"]["name"] for o in result.objects) == ["nested", "top"]


def test_root_app_renders_the_child_manifests_non_recursively(repo) -> None:
    apps = {a.name: a for a in discover_apps(repo[0].root, SETTINGS).apps}
    result = render_app(apps["argocd:root"], repo[0].root)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in result.objects) == [
        ("Application", "platform"),
        ("Application", "raw"),
        ("ApplicationSet", "services"),
    ]


def test_shared_base_change_affects_every_generated_app_using_it(repo, tmp_path) -> None:
    fleet, base = repo
    fleet.write({"apps/base/deployment.yaml": DEPLOYMENT.replace("nginx:1.25", "nginx:1.26")})
    head = fleet.commit("bump base")
    report = fleet.preview(base, head, tmp_path / "cache")
    assert report.errors == []
    assert sorted(by_name(report)) == ["argocd:svc-api", "argocd:svc-web"]
    assert all(app.status == "changed" for app in report.apps)
    assert report.notes and "5 Argo CD apps" in report.notes[0]


def test_new_directory_matching_the_generator_is_a_new_app(repo, tmp_path) -> None:
    fleet, base = repo
    fleet.write({"apps/services/cart/kustomization.yaml": "resources: [../../base]\n"})
    head = fleet.commit("add cart")
    report = fleet.preview(base, head, tmp_path / "cache")
    assert [(a.name, a.status) for a in report.apps] == [("argocd:svc-cart", "added")]
    (change,) = report.apps[0].changes
    assert (change.action, change.namespace, change.name) == ("create", "cart", "cart-app")


def test_generator_file_change_affects_the_apps_it_generates(repo, tmp_path) -> None:
    fleet, base = repo
    services = FILES["argocd/apps/services.yaml"].replace(
        'namePrefix: "{{path.basename}}-"', 'namePrefix: "svc-"'
    )
    fleet.write({"argocd/apps/services.yaml": services})
    head = fleet.commit("rename")
    report = fleet.preview(base, head, tmp_path / "cache")
    apps = by_name(report)
    assert {"argocd:svc-api", "argocd:svc-web", "argocd:root"} <= set(apps)
    assert "argocd:platform" not in apps
    actions = sorted((c.action, c.name) for c in apps["argocd:svc-web"].changes)
    assert actions == [("create", "svc-app"), ("delete", "web-app")]


def test_repo_without_sluice_yaml_tries_both_engines_and_says_what_it_found(repo, tmp_path) -> None:
    fleet, _ = repo
    fleet.remove(".sluice.yaml")
    base = fleet.commit("no config")
    fleet.write(
        {"apps/services/web/kustomization.yaml": "resources: [../../base]\nnamePrefix: x-\n"}
    )
    head = fleet.commit("change web")
    report = fleet.preview(base, head, tmp_path / "cache")
    assert report.errors == []
    assert report.notes[0].startswith(".sluice.yaml not found: discovered 5 Argo CD apps")
    # No repo_urls: the URL is assumed to be this repo because its paths exist, and said so.
    assert any(note.startswith(f"assumed {REPO_URL} is this repository") for note in report.notes)
    assert [a.name for a in report.apps] == ["argocd:svc-web"]


def test_repo_urls_from_the_server_config_name_this_repository(repo, tmp_path) -> None:
    fleet, _ = repo
    fleet.remove(".sluice.yaml")
    base = fleet.commit("no config")
    fleet.write(
        {"apps/services/web/kustomization.yaml": "resources: [../../base]\nnamePrefix: x-\n"}
    )
    head = fleet.commit("change web")
    report = fleet.preview(base, head, tmp_path / "cache", repo_urls=["github.com/acme/*"])
    assert report.errors == []
    assert not any(note.startswith("assumed") for note in report.notes)
    assert [(a.name, a.status) for a in report.apps] == [("argocd:svc-web", "changed")]
    # A pattern that does not name this repo: its sources are external, shown as such.
    report = fleet.preview(
        base, head, tmp_path / "cache", repo_urls=["gitlab.com/other/*"], all_apps=True
    )
    assert {a.status for a in report.apps} == {"not-rendered"}

"""A multi-source Argo CD Helm app with ``$values``, Helm options as Argo CD applies them,
external sources reported (never dropped), and a values file change detected."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import DiscoverSettings
from bot.render import render_app
from bot.render.discovery.discover import discover_apps
from bot.report.markdown import render_markdown
from tests.discoverykit import REPO_URL, GitRepo, by_name

CHART = {
    "charts/shop/Chart.yaml": "apiVersion: v2\nname: shop\nversion: 0.1.0\n",
    "charts/shop/values.yaml": "replicas: 1\nimage: {repository: shop, tag: '1.0'}\ncolor: blue\nfeatures: {}\n",
    "charts/shop/values-extra.yaml": "color: green\n",
    "charts/shop/templates/deploy.yaml": """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {{ .Release.Name }}
          namespace: {{ .Release.Namespace }}
          labels: {color: {{ .Values.color | quote }}, tier: {{ .Values.tier | default "none" | quote }}}
        spec:
          replicas: {{ .Values.replicas }}
          selector: {matchLabels: {app: shop}}
          template:
            metadata: {labels: {app: shop}}
            spec:
              containers:
                - name: shop
                  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
                  env: [{name: FEATURES, value: {{ .Values.features | toJson | quote }}}]
        """,
}

SHOP = f"""
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {{name: shop, namespace: argocd}}
spec:
  sources:
    - repoURL: {REPO_URL}
      path: charts/shop
      targetRevision: main
      helm:
        releaseName: shop-prod
        valueFiles:
          - values-extra.yaml
          - missing-optional.yaml
          - $values/envs/prod/shop.yaml
          - $values/envs/prod/shop-override.yaml
        ignoreMissingValueFiles: true
        values: |
          tier: ignored-because-valuesObject-wins
        valuesObject: {{tier: gold, features: {{search: true}}}}
        parameters:
          - {{name: image.tag, value: "2.1"}}
          - {{name: features.beta, value: "true"}}
          - {{name: color, value: "007", forceString: true}}
    - repoURL: {REPO_URL}
      targetRevision: main
      ref: values
    - repoURL: https://charts.bitnami.com/bitnami
      chart: redis
      targetRevision: 18.0.0
  destination: {{server: "https://kubernetes.default.svc", namespace: shop}}
"""

FILES = {
    ".sluice.yaml": 'discover:\n  repo_urls: ["github.com/acme/fleet"]\n  argocd: {}\nsignatures: {mode: "off"}\n',
    **CHART,
    "envs/prod/shop.yaml": "replicas: 3\n",
    "argocd/shop.yaml": SHOP,
    "argocd/cert-manager.yaml": """
        apiVersion: argoproj.io/v1alpha1
        kind: Application
        metadata: {name: cert-manager, namespace: argocd}
        spec:
          source: {repoURL: "https://charts.jetstack.io", chart: cert-manager, targetRevision: v1.14.0}
          destination: {namespace: cert-manager}
        """,
    "argocd/other-repo.yaml": """
        apiVersion: argoproj.io/v1alpha1
        kind: Application
        metadata: {name: other, namespace: argocd}
        spec:
          source: {repoURL: "https://github.com/acme/other.git", path: charts/shop}
          destination: {namespace: other}
        """,
}

SETTINGS = DiscoverSettings(argocd=("**",), repo_urls=("github.com/acme/fleet",))


@pytest.fixture
def repo(tmp_path: Path) -> tuple[GitRepo, str]:
    repo = GitRepo(tmp_path / "fleet")
    repo.write(FILES)
    return repo, repo.commit("fleet")


def apps(root: Path) -> dict:
    found = discover_apps(root, SETTINGS)
    assert found.errors == []
    return {a.name: a for a in found.apps}


def test_multi_source_helm_app_renders_with_argo_value_precedence(repo) -> None:
    result = render_app(apps(repo[0].root)["argocd:shop"], repo[0].root)
    assert result.error is None, result.error
    (deploy,) = result.objects
    # Release name and namespace from the Application.
    assert deploy["metadata"]["name"] == "shop-prod"
    assert deploy["metadata"]["namespace"] == "shop"
    # valueFiles: chart-relative, $values from the ref source; a missing one skipped.
    assert deploy["spec"]["replicas"] == 3
    # parameters > valuesObject > values > valueFiles; forceString keeps "007" a string.
    labels = deploy["metadata"]["labels"]
    assert labels == {"color": "007", "tier": "gold"}
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "shop:2.1"
    assert container["env"][0]["value"] == '{"beta":true,"search":true}'
    assert {"envs/prod/shop.yaml", "charts/shop/values-extra.yaml"} <= result.inputs
    assert result.unrendered == (
        "not rendered: external source https://charts.bitnami.com/bitnami (chart redis 18.0.0)",
    )


def test_missing_values_file_names_the_path_tried_and_the_rule(repo) -> None:
    fleet, _ = repo
    fleet.write(
        {
            "argocd/shop.yaml": SHOP.replace(
                "ignoreMissingValueFiles: true", "ignoreMissingValueFiles: false"
            )
        }
    )
    result = render_app(apps(fleet.root)["argocd:shop"], fleet.root)
    assert result.error == (
        "helm.values: 'missing-optional.yaml' not found (tried charts/shop/missing-optional.yaml; "
        "values files are relative to the chart directory charts/shop, a leading '/' means the "
        "repo root)"
    )


def test_external_sources_are_reported_in_the_preview(repo, tmp_path) -> None:
    fleet, base = repo
    head = fleet.commit("nothing")
    report = fleet.preview(base, head, tmp_path / "cache", all_apps=True)
    shown = {a.name: (a.status, a.error) for a in report.apps}
    assert shown["argocd:cert-manager"] == (
        "not-rendered",
        "not rendered: external source https://charts.jetstack.io (chart cert-manager v1.14.0)",
    )
    assert shown["argocd:other"] == (
        "not-rendered",
        "not rendered: external source https://github.com/acme/other.git (path charts/shop)",
    )
    assert shown["argocd:shop"][1].startswith(
        "not rendered: external source https://charts.bitnami"
    )
    # Not-rendered apps are visible but fail no gate.
    assert report.verdict == "pass"
    comment = render_markdown(report)
    assert "### Notes" in comment
    # Markdown-escaped, as any text from the repository is.
    assert "- `argocd:cert-manager`: not rendered: external source https\\://charts.jetstack" in (
        comment
    )
    as_json = report.to_dict()
    assert {a["name"]: a["status"] for a in as_json["apps"]}[
        "argocd:cert-manager"
    ] == "not-rendered"


def test_values_file_change_affects_only_the_app_reading_it(repo, tmp_path) -> None:
    fleet, base = repo
    fleet.write({"envs/prod/shop.yaml": "replicas: 5\n", "envs/prod/unused.yaml": "x: 1\n"})
    head = fleet.commit("scale shop")
    report = fleet.preview(base, head, tmp_path / "cache")
    assert list(by_name(report)) == ["argocd:shop"]
    (change,) = report.apps[0].changes
    assert "-  replicas: 3" in change.diff and "+  replicas: 5" in change.diff


def test_added_values_file_that_was_missing_is_found(repo, tmp_path) -> None:
    fleet, base = repo
    fleet.write({"envs/prod/shop-override.yaml": "replicas: 9\n"})
    head = fleet.commit("add the optional values file outside the chart")
    report = fleet.preview(base, head, tmp_path / "cache")
    assert list(by_name(report)) == ["argocd:shop"]
    assert "+  replicas: 9" in report.apps[0].changes[0].diff


def test_helm_options_sluice_cannot_apply_are_errors_not_silent_differences(repo) -> None:
    fleet, _ = repo
    shop = SHOP.replace(
        "releaseName: shop-prod",
        "releaseName: shop-prod\n        fileParameters: [{name: cfg, path: files/cfg.txt}]",
    )
    fleet.write({"argocd/shop.yaml": shop})
    found = discover_apps(fleet.root, SETTINGS)
    assert "argocd:shop" not in {a.name for a in found.apps}
    assert found.errors == [
        "argocd/shop.yaml: Application shop: helm.fileParameters is not supported by Sluice"
    ]

"""ApplicationSet generators and template syntaxes, and discovery's confinement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.config import DiscoverSettings
from bot.render import render_app
from bot.render.discovery.discover import discover_apps
from tests.discoverykit import REPO_URL, GitRepo

SETTINGS = DiscoverSettings(argocd=("**",), flux=("**",), repo_urls=(REPO_URL,))
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"


def appset(
    generators: str, name: str, *, go: bool = False, path: str = "{{path}}", ns: str = "{{cluster}}"
) -> str:
    header = "  goTemplate: true\n  goTemplateOptions: [missingkey=error]\n" if go else ""
    return (
        "apiVersion: argoproj.io/v1alpha1\nkind: ApplicationSet\nmetadata: {name: set}\nspec:\n"
        f"{header}  generators:\n{generators}"
        "  template:\n"
        f"    metadata: {{name: '{name}'}}\n"
        "    spec:\n"
        f"      source: {{repoURL: '{REPO_URL}', path: '{path}'}}\n"
        f"      destination: {{namespace: '{ns}'}}\n"
    )


def discover(tmp_path: Path, files: dict[str, str]):
    repo = GitRepo(tmp_path / "repo")
    repo.write(files)
    return discover_apps(repo.root, SETTINGS)


def test_list_generator_with_fasttemplate(tmp_path) -> None:
    generators = (
        "    - list:\n        elements:\n"
        "          - {cluster: dev, path: envs/dev}\n"
        "          - {cluster: prod, path: envs/prod}\n"
    )
    found = discover(
        tmp_path,
        {
            "set.yaml": appset(generators, "web-{{ cluster }}"),
            "envs/dev/cm.yaml": CM,
            "envs/prod/cm.yaml": CM,
        },
    )
    assert found.errors == []
    assert [(a.name, a.path, a.namespace) for a in found.apps] == [
        ("argocd:web-dev", "envs/dev", "dev"),
        ("argocd:web-prod", "envs/prod", "prod"),
    ]


def test_matrix_of_git_files_and_list_with_go_templates(tmp_path) -> None:
    generators = (
        "    - matrix:\n        generators:\n"
        f"          - git: {{repoURL: '{REPO_URL}', revision: main, files: [{{path: 'clusters/*/config.json'}}]}}\n"
        "          - list: {elements: [{app: web}, {app: api}]}\n"
    )
    files = {
        "set.yaml": appset(
            generators,
            "{{.app}}-{{.cluster.name | lower}}-{{index .path.segments 1}}",
            go=True,
            path="apps/{{.app}}",
            ns="{{ .cluster.name | lower }}",
        ),
        "clusters/eu/config.json": '{"cluster": {"name": "EU1"}}',
        "clusters/us/config.json": '{"cluster": {"name": "US1"}}',
        "apps/web/cm.yaml": CM,
        "apps/api/cm.yaml": CM,
    }
    found = discover(tmp_path, files)
    assert found.errors == []
    names = [a.name for a in found.apps]
    assert names == [
        "argocd:api-eu1-eu",
        "argocd:api-us1-us",
        "argocd:web-eu1-eu",
        "argocd:web-us1-us",
    ]
    app = {a.name: a for a in found.apps}["argocd:web-eu1-eu"]
    assert (app.path, app.namespace) == ("apps/web", "eu1")
    # The generator file is watched: a change to it affects the app.
    assert "clusters/eu/config.json" in app.watch and "set.yaml" in app.watch


def test_merge_generator_overrides_by_key(tmp_path) -> None:
    generators = (
        "    - merge:\n        mergeKeys: [cluster]\n        generators:\n"
        "          - list: {elements: [{cluster: dev, path: a}, {cluster: prod, path: a}]}\n"
        "          - list: {elements: [{cluster: prod, path: b}]}\n"
    )
    found = discover(
        tmp_path,
        {"set.yaml": appset(generators, "x-{{cluster}}"), "a/cm.yaml": CM, "b/cm.yaml": CM},
    )
    assert [(a.name, a.path) for a in found.apps] == [("argocd:x-dev", "a"), ("argocd:x-prod", "b")]


def test_missing_key_with_missingkey_error_is_reported_not_guessed(tmp_path) -> None:
    generators = "    - list: {elements: [{cluster: dev}]}\n"
    found = discover(tmp_path, {"set.yaml": appset(generators, "{{.nope}}", go=True, ns="x")})
    assert found.apps == []
    assert found.errors == ["template: map has no entry for key 'nope'"]


def test_unsupported_generator_is_an_error_never_silence(tmp_path) -> None:
    generators = "    - clusters: {}\n"
    found = discover(tmp_path, {"set.yaml": appset(generators, "x")})
    assert found.errors == [
        "set.yaml: ApplicationSet set: the clusters generator needs the cluster or an API; not rendered"
    ]


def test_application_path_leaving_the_repo_is_refused(tmp_path) -> None:
    app = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: evil}\n"
        f"spec: {{source: {{repoURL: '{REPO_URL}', path: ../../etc}}, destination: {{}}}}\n"
    )
    found = discover(tmp_path, {"evil.yaml": app})
    assert found.apps == []
    assert found.errors == [
        "evil.yaml: Application evil: source path '../../etc' must stay inside the repository"
    ]


def test_values_file_escaping_through_ref_is_refused(tmp_path) -> None:
    app = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: evil}\nspec:\n"
        "  sources:\n"
        f"    - {{repoURL: '{REPO_URL}', path: chart, helm: {{valueFiles: ['$v/../../../etc/passwd']}}}}\n"
        f"    - {{repoURL: '{REPO_URL}', ref: v}}\n"
        "  destination: {}\n"
    )
    files = {"evil.yaml": app, "chart/Chart.yaml": "apiVersion: v2\nname: c\nversion: 1.0.0\n"}
    found = discover(tmp_path, files)
    (evil,) = found.apps
    result = render_app(evil, tmp_path / "repo")
    assert result.error == "helm.values: '../../../etc/passwd' leaves the repository"


def test_flux_kustomization_symlinked_out_of_the_repo_is_refused(tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text(CM)
    kustomization = (
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: k}\n"
        "spec: {path: ./deploy, sourceRef: {kind: GitRepository, name: flux-system}}\n"
        "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\n"
        f"metadata: {{name: flux-system}}\nspec: {{url: '{REPO_URL}'}}\n"
    )
    repo = GitRepo(tmp_path / "repo")
    repo.write({"flux.yaml": kustomization, "deploy/cm.yaml": CM})
    os.symlink(outside, repo.root / "deploy" / "link")
    found = discover_apps(repo.root, DiscoverSettings(flux=("flux.yaml",), repo_urls=(REPO_URL,)))
    # Fail closed: the whole discovery stops with the offending path named.
    assert found.apps == []
    assert found.errors == ["discovery: deploy/link resolves outside the repository (symlink)"]


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("https://github.com/acme/fleet.git", True),
        ("git@github.com:acme/fleet.git", True),
        ("ssh://git@github.com/acme/fleet", True),
        ("https://github.com/acme/fleet-other.git", False),
        ("https://evil.example/acme/fleet.git", False),
    ],
)
def test_repo_url_patterns(tmp_path, url: str, local: bool) -> None:
    app = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
        f"spec: {{source: {{repoURL: '{url}', path: d}}, destination: {{}}}}\n"
    )
    found = discover(tmp_path, {"a.yaml": app, "d/cm.yaml": CM})
    (found_app,) = found.apps
    assert bool(found_app.sources) is local


def test_git_files_generator_file_change_affects_the_apps_it_generates(tmp_path) -> None:
    generators = (
        f"    - git: {{repoURL: '{REPO_URL}', revision: main, files: [{{path: 'envs/*.json'}}]}}\n"
    )
    repo = GitRepo(tmp_path / "repo")
    repo.write(
        {
            ".sluice.yaml": "discover: {argocd: {}, repo_urls: ['github.com/acme/fleet']}\n"
            "signatures: {mode: 'off'}\n",
            "set.yaml": appset(generators, "web-{{cluster}}", path="apps/web"),
            "envs/dev.json": '{"cluster": "dev"}',
            "envs/prod.json": '{"cluster": "prod"}',
            "apps/web/cm.yaml": CM,
        }
    )
    base = repo.commit("fleet")
    repo.write({"envs/prod.json": '{"cluster": "prod", "note": "x"}'})
    head = repo.commit("touch the prod generator file")
    report = repo.preview(base, head, tmp_path / "cache")
    # Only the app generated from the changed file; its render is the same.
    assert [(a.name, a.status) for a in report.apps] == [("argocd:web-prod", "unchanged")]

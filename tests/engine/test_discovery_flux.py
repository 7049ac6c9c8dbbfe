"""A Flux fleet repo (clusters/, infrastructure/, apps/) with postBuild substitution and a
HelmRelease from this repo's GitRepository, rendered as kustomize-controller and
helm-controller would, and affected-app detection through bases, vars and values."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import DiscoverSettings
from bot.render import render_app
from bot.render.discovery.discover import discover_apps
from bot.render.discovery.envsubst import Substitution
from bot.render.limits import RenderError
from tests.discoverykit import GitRepo, by_name, index

FLUX_URL = "ssh://git@github.com/acme/fleet"

FILES = {
    ".sluice.yaml": 'discover:\n  flux: {paths: ["clusters/**"]}\nsignatures: {mode: "off"}\n',
    "clusters/production/flux-system/gotk-sync.yaml": f"""
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {{name: flux-system, namespace: flux-system}}
        spec: {{interval: 1m, ref: {{branch: main}}, url: "{FLUX_URL}"}}
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {{name: flux-system, namespace: flux-system}}
        spec:
          interval: 10m
          path: ./clusters/production
          prune: true
          sourceRef: {{kind: GitRepository, name: flux-system}}
        """,
    "clusters/production/infrastructure.yaml": """
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {name: infra-controllers, namespace: flux-system}
        spec:
          interval: 1h
          path: ./infrastructure/controllers
          prune: true
          sourceRef: {kind: GitRepository, name: flux-system}
          targetNamespace: infra
          namePrefix: prod-
        """,
    "clusters/production/apps.yaml": """
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {name: apps, namespace: flux-system}
        spec:
          dependsOn: [{name: infra-controllers}]
          interval: 10m
          path: ./apps/production
          prune: true
          sourceRef: {kind: GitRepository, name: flux-system}
          images: [{name: podinfo, newName: ghcr.io/stefanprodan/podinfo, newTag: 6.5.0}]
          patches:
            - target: {kind: Deployment, name: podinfo}
              patch: |
                - {op: add, path: /metadata/annotations, value: {patched: "yes"}}
          postBuild:
            substitute: {cluster_env: production, domain: override.example}
            substituteFrom:
              - {kind: ConfigMap, name: cluster-vars}
              - {kind: Secret, name: cluster-secrets}
        """,
    "clusters/production/cluster-vars.yaml": """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: cluster-vars, namespace: flux-system}
        data: {domain: example.com, replicas: "3", region: eu-west-1}
        """,
    "clusters/production/podinfo-release.yaml": """
        apiVersion: helm.toolkit.fluxcd.io/v2
        kind: HelmRelease
        metadata: {name: podinfo, namespace: flux-system}
        spec:
          interval: 10m
          targetNamespace: web
          chart:
            spec:
              chart: ./charts/podinfo
              sourceRef: {kind: GitRepository, name: flux-system}
              valuesFiles: [charts/podinfo/values.yaml, charts/podinfo/values-prod.yaml]
          valuesFrom:
            - {kind: ConfigMap, name: podinfo-values}
            - {kind: Secret, name: podinfo-secrets}
          values: {color: purple}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: podinfo-values, namespace: flux-system}
        data:
          values.yaml: |
            replicas: 4
        """,
    "infrastructure/controllers/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: infra}\n",
    "infrastructure/controllers/ingress/deploy.yaml": """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: ingress}
        spec:
          selector: {matchLabels: {app: ingress}}
          template:
            metadata: {labels: {app: ingress}}
            spec: {containers: [{name: ingress, image: "nginx:1.25"}]}
        """,
    "infrastructure/controllers/ingress/values.yaml": "not: a manifest\n",
    "apps/base/podinfo/kustomization.yaml": "resources: [deployment.yaml, ingress.yaml]\n",
    "apps/base/podinfo/deployment.yaml": """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: podinfo, namespace: podinfo}
        spec:
          replicas: ${replicas:=1}
          selector: {matchLabels: {app: podinfo}}
          template:
            metadata: {labels: {app: podinfo}}
            spec:
              containers:
                - name: podinfo
                  image: podinfo:6.0.0
                  env:
                    - {name: ENV, value: "${cluster_env}"}
                    - {name: REGION, value: "${region^^}"}
                    - {name: TOKEN, value: "${api_token}"}
                    - {name: LITERAL, value: "$${not_a_var}"}
                    - {name: SHELL, value: "$HOME"}
        """,
    "apps/base/podinfo/ingress.yaml": """
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: podinfo, namespace: podinfo}
        spec: {rules: [{host: "podinfo.${domain}"}]}
        """,
    "apps/production/kustomization.yaml": "resources: [../base/podinfo]\n",
    "apps/production/unused.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: unused}\n",
    "charts/podinfo/Chart.yaml": "apiVersion: v2\nname: podinfo\nversion: 1.0.0\n",
    "charts/podinfo/values.yaml": "replicas: 1\ncolor: blue\nimage: {tag: '6.0'}\n",
    "charts/podinfo/values-prod.yaml": "image: {tag: '6.5'}\n",
    "charts/podinfo/templates/deploy.yaml": """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: "{{ .Release.Name }}", labels: {color: "{{ .Values.color }}"}}
        spec:
          replicas: {{ .Values.replicas }}
          selector: {matchLabels: {app: podinfo}}
          template:
            metadata: {labels: {app: podinfo}}
            spec: {containers: [{name: podinfo, image: "podinfo:{{ .Values.image.tag }}"}]}
        """,
}

SETTINGS = DiscoverSettings(flux=("clusters/**",))


@pytest.fixture
def repo(tmp_path: Path) -> tuple[GitRepo, str]:
    repo = GitRepo(tmp_path / "fleet")
    repo.write(FILES)
    return repo, repo.commit("fleet")


def apps(root: Path) -> dict:
    found = discover_apps(root, SETTINGS)
    assert found.errors == []
    return {a.name: a for a in found.apps}


def test_discovered_names(repo) -> None:
    assert sorted(apps(repo[0].root)) == [
        "flux:flux-system/apps",
        "flux:flux-system/flux-system",
        "flux:flux-system/infra-controllers",
        "flux:flux-system/podinfo",
    ]


def test_kustomization_with_postbuild_substitution(repo) -> None:
    result = render_app(apps(repo[0].root)["flux:flux-system/apps"], repo[0].root)
    assert result.error is None, result.error
    objects = index(result.objects)
    deploy = objects[("Deployment", "podinfo", "podinfo")]
    # substituteFrom ConfigMap; ${var:=default} yields to a defined value; YAML typed after.
    assert deploy["spec"]["replicas"] == 3
    env = {
        e["name"]: e["value"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["ENV"] == "production"
    assert env["REGION"] == "EU-WEST-1"
    assert env["LITERAL"] == "${not_a_var}"  # $${...} escapes
    assert env["SHELL"] == "$HOME"  # only ${...} is substituted
    # A Secret source is never read: its variables stay as written and are named.
    assert env["TOKEN"] == "${api_token}"
    assert result.unrendered == (
        "unresolved postBuild variables api_token: from Secret flux-system/cluster-secrets "
        "(Secret values are never read); left as written",
    )
    # substitute wins over substituteFrom.
    assert objects[("Ingress", "podinfo", "podinfo")]["spec"]["rules"][0]["host"] == (
        "podinfo.override.example"
    )
    # images and patches of the Kustomization apply.
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/stefanprodan/podinfo:6.5.0"
    )
    assert deploy["metadata"]["annotations"] == {"patched": "yes"}


def test_directory_without_kustomization_is_built_from_every_manifest(repo) -> None:
    result = render_app(apps(repo[0].root)["flux:flux-system/infra-controllers"], repo[0].root)
    assert result.error is None, result.error
    assert sorted(
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in result.objects
    ) == [
        ("Deployment", "infra", "prod-ingress"),
        ("Namespace", None, "infra"),  # kustomize never prefixes a Namespace's name
    ]


def test_helmrelease_from_this_repo_follows_flux_values_rules(repo) -> None:
    result = render_app(apps(repo[0].root)["flux:flux-system/podinfo"], repo[0].root)
    assert result.error is None, result.error
    (deploy,) = result.objects
    assert deploy["metadata"]["name"] == "web-podinfo"  # [<targetNamespace>-]<name>
    assert deploy["spec"]["replicas"] == 4  # valuesFrom ConfigMap over valuesFiles
    assert deploy["metadata"]["labels"] == {"color": "purple"}  # inline values last
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:6.5"
    assert result.unrendered == (
        "not rendered: valuesFrom Secret flux-system/podinfo-secrets (Secret values are never read)",
    )


def test_valuesfiles_replace_the_chart_defaults(repo) -> None:
    fleet, _ = repo
    release = FILES["clusters/production/podinfo-release.yaml"]
    fleet.write(
        {
            "clusters/production/podinfo-release.yaml": release.replace(
                "valuesFiles: [charts/podinfo/values.yaml, charts/podinfo/values-prod.yaml]",
                "valuesFiles: [charts/podinfo/values-prod.yaml]",
            ).replace("values: {color: purple}", "values: {}")
        }
    )
    result = render_app(apps(fleet.root)["flux:flux-system/podinfo"], fleet.root)
    assert result.error is None, result.error
    # values.yaml is not merged when valuesFiles are given: color is unset, not "blue".
    assert result.objects[0]["metadata"]["labels"] == {"color": ""}


def test_shared_base_change_affects_the_kustomization(repo, tmp_path) -> None:
    fleet, base = repo
    fleet.write(
        {
            "apps/base/podinfo/ingress.yaml": FILES["apps/base/podinfo/ingress.yaml"].replace(
                "podinfo.", "www."
            )
        }
    )
    head = fleet.commit("rename host")
    report = fleet.preview(base, head, tmp_path / "cache")
    assert list(by_name(report)) == ["flux:flux-system/apps"]
    (change,) = report.apps[0].changes
    assert "+  - host: www.override.example" in change.diff


def test_substitution_configmap_change_affects_the_kustomization(repo, tmp_path) -> None:
    fleet, base = repo
    fleet.write(
        {
            "clusters/production/cluster-vars.yaml": FILES[
                "clusters/production/cluster-vars.yaml"
            ].replace('replicas: "3"', 'replicas: "6"')
        }
    )
    head = fleet.commit("scale")
    report = fleet.preview(base, head, tmp_path / "cache")
    apps_ = by_name(report)
    assert "flux:flux-system/apps" in apps_
    assert "flux:flux-system/podinfo" not in apps_
    assert apps_["flux:flux-system/apps"].status == "changed"


def test_helm_values_file_change_affects_the_release(repo, tmp_path) -> None:
    fleet, base = repo
    fleet.write({"charts/podinfo/values-prod.yaml": "image: {tag: '6.6'}\n"})
    head = fleet.commit("bump")
    report = fleet.preview(base, head, tmp_path / "cache")
    assert list(by_name(report)) == ["flux:flux-system/podinfo"]


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("${a}", {"a": "x"}, "x"),
        ("${missing}", {}, ""),
        ("${missing:=dflt}", {}, "dflt"),
        ("${empty:=dflt}", {"empty": ""}, "dflt"),
        ("${empty=dflt}", {"empty": ""}, ""),
        ("$${a}", {"a": "x"}, "${a}"),
        ("$a ${a}", {"a": "x"}, "$a x"),
        ("${a:1:2}", {"a": "abcdef"}, "bc"),
        ("${a/b/c}", {"a": "abab"}, "acab"),
        ("${a//b/c}", {"a": "abab"}, "acac"),
    ],
)
def test_envsubst_rules(text: str, variables: dict, expected: str) -> None:
    assert Substitution(variables).text(text, "t") == expected


def test_envsubst_refuses_what_it_cannot_do() -> None:
    with pytest.raises(RenderError, match=r"unsupported substitution \$\{a@Q\}"):
        Substitution({"a": "x"}).text("${a@Q}", "t")


def test_flux_sources_outside_the_repo_are_reported_not_rendered(repo) -> None:
    fleet, _ = repo
    fleet.write(
        {
            "clusters/production/external.yaml": """
                apiVersion: source.toolkit.fluxcd.io/v1
                kind: HelmRepository
                metadata: {name: bitnami, namespace: flux-system}
                spec: {url: "https://charts.bitnami.com/bitnami"}
                ---
                apiVersion: helm.toolkit.fluxcd.io/v2
                kind: HelmRelease
                metadata: {name: redis, namespace: flux-system}
                spec:
                  chart:
                    spec:
                      chart: redis
                      version: 18.0.0
                      sourceRef: {kind: HelmRepository, name: bitnami}
                ---
                apiVersion: kustomize.toolkit.fluxcd.io/v1
                kind: Kustomization
                metadata: {name: podinfo-oci, namespace: flux-system}
                spec:
                  path: ./
                  sourceRef: {kind: OCIRepository, name: podinfo}
                """,
        }
    )
    found = apps(fleet.root)
    redis = render_app(found["flux:flux-system/redis"], fleet.root)
    assert (redis.objects, redis.unrendered) == (
        [],
        ("not rendered: external source https://charts.bitnami.com/bitnami (chart redis 18.0.0)",),
    )
    oci = render_app(found["flux:flux-system/podinfo-oci"], fleet.root)
    assert oci.unrendered == (
        "not rendered: external source OCIRepository flux-system/podinfo (path .)",
    )

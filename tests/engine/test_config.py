"""`.sluice.yaml` validation: errors name the file, the app and the field."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, parse_repo_config


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config(text, ".sluice.yaml")
    return str(caught.value)


def test_full_config_parses() -> None:
    config = parse_repo_config(
        """
apps:
  - name: web-prod
    path: apps/web/overlays/prod
    renderer: kustomize
    namespace: web
    helm: {release: web, values: [values-prod.yaml]}
    watch: ["charts/common/**"]
policy: {paths: [policies/, extra/], package: gate}
signatures: {mode: head}
"""
    )
    (app,) = config.apps
    assert (app.name, app.path, app.renderer, app.namespace) == (
        "web-prod",
        "apps/web/overlays/prod",
        "kustomize",
        "web",
    )
    assert app.helm.values == ("values-prod.yaml",) and app.watch == ("charts/common/**",)
    assert config.policy.paths == ("policies/", "extra/") and config.policy.package == "gate"
    assert config.signatures.mode == "head"


def test_defaults_are_closed() -> None:
    config = parse_repo_config("apps: []")
    assert config.signatures.mode == "all"
    assert config.policy.paths == ("policies/",)


def test_unquoted_off_means_off() -> None:
    assert parse_repo_config("signatures: {mode: off}").signatures.mode == "off"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("apps:\n  - {name: web, path: ../outside}", "apps[0] (web): path: must be relative"),
        ("apps:\n  - {name: web, path: /etc}", "apps[0] (web): path"),
        ("apps:\n  - {name: web, path: a, renderer: jsonnet}", "apps[0] (web): renderer"),
        ("apps:\n  - {name: Web App, path: a}", "apps[0]: name"),
        ("apps:\n  - {name: a, path: x}\n  - {name: a, path: y}", "apps[1] (a): name: duplicate"),
        ("apps:\n  - {name: a, path: x, pth: y}", "apps[0] (a): unknown field 'pth'"),
        ("apps:\n  - {name: a, path: x, helm: {values: [/../abs.yaml]}}", "helm.values"),
        ("apps:\n  - {name: a, path: x, watch: ['../**']}", "watch"),
        ("signatures: {mode: some}", "signatures: mode: must be one of off, head, all"),
        ("policy: {paths: [../p]}", "policy: paths"),
        ("apps: {a: 1}", "apps: must be a list"),
        ("apps: [\n", ".sluice.yaml: "),
    ],
)
def test_errors_name_file_app_and_field(text: str, expected: str) -> None:
    message = error_of(text)
    assert message.startswith(".sluice.yaml: ")
    assert expected in message


def test_yaml_error_gives_line_not_content() -> None:
    message = error_of("apps:\n  - name: a\n    path: [unclosed: s3cr3t\n")
    assert "line" in message and "s3cr3t" not in message

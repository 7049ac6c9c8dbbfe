"""Repo config (``.sluice.yaml``) and its validation.

Errors name the file, the app and the field, e.g.
``.sluice.yaml: apps[1] (web-prod): path: must stay inside the repository``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from bot.models import ANY_APP_NAME as ANY_APP_NAME  # re-exported: its old home
from bot.models import App, HelmSettings

# The linear-time glob matcher's cap (bot.render.globs.MAX_PATTERN_CHARS).
MAX_WATCH_CHARS = 256

REPO_CONFIG_FILE = ".sluice.yaml"
RENDERERS = ("auto", "plain", "kustomize", "helm")
SIGNATURE_MODES = ("off", "head", "all")
POLICY_ENGINES = ("regorus", "regopy", "opa")
_APP_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_MAX_CONFIG_BYTES = 1024 * 1024
_FLAGS = ("self_heal", "sync_before_merge", "allow_mass_prune")


class ConfigError(ValueError):
    """A config file is malformed; the message names file, app and field."""


@dataclass(frozen=True)
class PolicySettings:
    paths: tuple[str, ...] = ("policies/",)
    package: str = "main"


@dataclass(frozen=True)
class SignatureSettings:
    mode: str = "all"


@dataclass(frozen=True)
class DiscoverSettings:
    """``discover:``: find apps in Argo CD / Flux manifests (None = that engine is off)."""

    argocd: tuple[str, ...] | None = None  # globs of files to read
    flux: tuple[str, ...] | None = None
    # URLs (fnmatch patterns) that name this repository in repoURL / GitRepository url.
    repo_urls: tuple[str, ...] = ()
    argocd_name: str = "argocd:{name}"
    flux_name: str = "flux:{namespace}/{name}"


# What a repo without .sluice.yaml tries: both engines over the whole tree.
DISCOVER_EVERYTHING = DiscoverSettings(argocd=("**",), flux=("**",))


@dataclass(frozen=True)
class RepoConfig:
    apps: tuple[App, ...] = ()
    policy: PolicySettings = field(default_factory=PolicySettings)
    signatures: SignatureSettings = field(default_factory=SignatureSettings)
    discover: DiscoverSettings | None = None

    def app(self, name: str) -> App | None:
        return next((a for a in self.apps if a.name == name), None)


def safe_repo_path(value: str) -> str | None:
    """Normalise a repo-relative path; None if it is absolute or leaves the repo."""
    if not value or value.startswith("/") or "\\" in value or "\x00" in value:
        return None
    norm = posixpath.normpath(value)
    if norm == ".." or norm.startswith("../"):
        return None
    return "" if norm == "." else norm


def load_yaml_text(text: str | bytes, source: str) -> Any:
    if len(text) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: file is larger than {_MAX_CONFIG_BYTES} bytes")
    try:
        return yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: {problem}{where}") from None


def parse_repo_config(text: str | bytes, source: str = REPO_CONFIG_FILE) -> RepoConfig:
    """Parse and validate ``.sluice.yaml`` content."""
    data = load_yaml_text(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    _reject_unknown(data, {"apps", "policy", "signatures", "discover"}, source)
    raw_apps = data.get("apps") or []
    if not isinstance(raw_apps, list):
        raise ConfigError(f"{source}: apps: must be a list")
    apps: list[App] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_apps):
        app = _parse_app(raw, f"{source}: apps[{index}]")
        if app.name in seen:
            raise ConfigError(f"{source}: apps[{index}] ({app.name}): name: duplicate app name")
        seen.add(app.name)
        apps.append(app)
    return RepoConfig(
        apps=tuple(apps),
        policy=_parse_policy(data.get("policy"), f"{source}: policy"),
        signatures=_parse_signatures(data.get("signatures"), f"{source}: signatures"),
        discover=_parse_discover(data.get("discover"), f"{source}: discover"),
    )


def _reject_unknown(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )


def _string(value: Any, where: str, field_name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {field_name}: must be a non-empty string")
    return value


def _string_list(value: Any, where: str, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {field_name}: must be a list of strings")
    return tuple(value)


def _parse_app(raw: Any, where: str) -> App:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not _APP_NAME.match(name):
        raise ConfigError(
            f"{where}: name: must be a lowercase DNS-style name (a-z, 0-9, '.', '_', '-')"
        )
    where = f"{where} ({name})"
    _reject_unknown(raw, {"name", "path", "renderer", "namespace", "helm", "watch", *_FLAGS}, where)
    path = safe_repo_path(_string(raw.get("path"), where, "path"))
    if path is None:
        raise ConfigError(f"{where}: path: must be relative and stay inside the repository")
    renderer = raw.get("renderer", "auto")
    if renderer not in RENDERERS:
        raise ConfigError(f"{where}: renderer: must be one of {', '.join(RENDERERS)}")
    namespace = raw.get("namespace")
    if namespace is not None:
        namespace = _string(namespace, where, "namespace")
    helm = _parse_helm(raw.get("helm"), where)
    watch = _string_list(raw.get("watch"), where, "watch")
    for pattern in watch:
        if safe_repo_path(pattern) is None:
            raise ConfigError(f"{where}: watch: {pattern!r} must stay inside the repository")
        if len(pattern) > MAX_WATCH_CHARS:
            raise ConfigError(
                f"{where}: watch: a pattern is {len(pattern)} characters, over the limit of "
                f"{MAX_WATCH_CHARS}"
            )
    flags = {}
    for flag in _FLAGS:
        value = raw.get(flag, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {flag}: must be true or false")
        flags[flag] = value
    return App(
        name=name,
        path=path,
        renderer=renderer,
        namespace=namespace,
        helm=helm,
        watch=watch,
        **flags,
    )


def _parse_helm(raw: Any, where: str) -> HelmSettings:
    if raw is None:
        return HelmSettings()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: helm: must be a mapping")
    _reject_unknown(raw, {"release", "values"}, f"{where}: helm")
    release = raw.get("release")
    if release is not None:
        release = _string(release, where, "helm.release")
    values = _string_list(raw.get("values"), where, "helm.values")
    for value_file in values:
        # Relative to the chart directory, or to the repo root with a leading "/".
        if value_file.startswith("/") and safe_repo_path(value_file.lstrip("/")) is None:
            raise ConfigError(
                f"{where}: helm.values: {value_file!r} must stay inside the repository"
            )
    return HelmSettings(release=release, values=values)


def _parse_discover(raw: Any, where: str) -> DiscoverSettings | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    _reject_unknown(raw, {"argocd", "flux", "repo_urls"}, where)
    engines: dict[str, Any] = {}
    for engine, default_name in (("argocd", "argocd:{name}"), ("flux", "flux:{namespace}/{name}")):
        section = raw.get(engine)
        if section is None:
            continue
        if section is True:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: {engine}: must be a mapping such as {{paths: ['**']}}")
        _reject_unknown(section, {"paths", "name"}, f"{where}: {engine}")
        paths = _string_list(section.get("paths"), f"{where}: {engine}", "paths") or ("**",)
        for pattern in paths:
            if safe_repo_path(pattern) is None:
                raise ConfigError(
                    f"{where}: {engine}: paths: {pattern!r} must stay inside the repository"
                )
        name = section.get("name", default_name)
        if not isinstance(name, str) or "{name}" not in name:
            raise ConfigError(f"{where}: {engine}: name: must be a string containing {{name}}")
        engines[engine] = paths
        engines[f"{engine}_name"] = name
    repo_urls = _string_list(raw.get("repo_urls"), where, "repo_urls")
    return DiscoverSettings(repo_urls=repo_urls, **engines)


def _parse_policy(raw: Any, where: str) -> PolicySettings:
    if raw is None:
        return PolicySettings()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    _reject_unknown(raw, {"paths", "package"}, where)
    paths = _string_list(raw.get("paths"), where, "paths") or PolicySettings.paths
    for path in paths:
        if safe_repo_path(path) is None:
            raise ConfigError(f"{where}: paths: {path!r} must stay inside the repository")
    package = raw.get("package", "main")
    if not isinstance(package, str) or not re.match(r"^[A-Za-z_][\w.]*$", package):
        raise ConfigError(f"{where}: package: must be a Rego package name such as 'main'")
    return PolicySettings(paths=paths, package=package)


def _parse_signatures(raw: Any, where: str) -> SignatureSettings:
    if raw is None:
        return SignatureSettings()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    _reject_unknown(raw, {"mode"}, where)
    mode = raw.get("mode", "all")
    if mode is False:
        mode = "off"  # YAML 1.1 reads an unquoted `off` as false
    if mode not in SIGNATURE_MODES:
        raise ConfigError(f"{where}: mode: must be one of {', '.join(SIGNATURE_MODES)}")
    return SignatureSettings(mode=mode)

"""Helm apps: ``helm template`` through Helm's own Go engine (helm-python-sdk), in workers.

Charts render offline from the exported revision only: subcharts must be
vendored in the chart's ``charts/`` directory, values files are repo paths
inside the export, and the chart directory may not contain a symlink that
leaves the export (Helm's loader would follow it).
"""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from typing import Any

from bot.models import App, K8sObject
from bot.render.discovery.helmset import deep_merge, set_parameter
from bot.render.helm_pool import HelmPool
from bot.render.limits import RenderError, RenderLimits
from bot.render.manifests import load_manifests, load_yaml_document, redact_quoted
from bot.render.tree import ExportTree

_MAX_ERROR_CHARS = 400
_GO_TYPE_DUMP = re.compile(r"map\[[^\[\]]*\]")


def helm_engine_version() -> str:
    # The wheel pins the Helm SDK it embeds; the engine itself loads only in workers.
    return f"helm:{version('helm-python-sdk')}"


def chart_file(directory: str) -> str:
    return f"{directory}/Chart.yaml" if directory else "Chart.yaml"


def values_files(tree: ExportTree, app: App) -> list[str]:
    """The app's values files as repo paths (paths escaping the export are refused).

    Argo CD's rule: relative to the chart directory, a leading ``/`` means the repo root.
    """
    files = []
    for ref in app.helm.values:
        if ref.startswith("/"):
            rel = tree.join("", ref.lstrip("/"), "helm.values")
        else:
            rel = tree.join(app.path, ref, "helm.values")
        if not tree.is_file(rel, "helm.values"):
            if app.helm.ignore_missing:
                continue
            raise RenderError(
                f"helm.values: {ref!r} not found (tried {rel}; values files are relative to "
                f"the chart directory {app.path or '.'}, a leading '/' means the repo root)"
            )
        files.append(rel)
    return files


def helm_inputs(tree: ExportTree, app: App, chart_files: list[str] | None = None) -> set[str]:
    """Every file of the chart (Helm loads them all) plus the values files."""
    if chart_files is None:
        chart_files = tree.walk(app.path, app.path or ".")
    inputs: set[str] = set()
    for rel in [*chart_files, *values_files(tree, app)]:
        inputs |= tree.inputs_for(rel, rel)
    return inputs


def release_name(app: App) -> str:
    return app.helm.release or app.name


def render_helm(
    tree: ExportTree, app: App, limits: RenderLimits, deadline: float, pool: HelmPool
) -> list[K8sObject]:
    """Render the chart in a Helm worker process (see :mod:`bot.render.helm_pool`)."""
    chart_yaml = chart_file(app.path)
    if not tree.is_file(chart_yaml, chart_yaml):
        raise RenderError(f"{app.path or '.'}: no Chart.yaml, not a Helm chart")
    metadata = load_yaml_document(tree.read_bytes(chart_yaml, limits), chart_yaml, limits)
    if not isinstance(metadata, dict):
        raise RenderError(f"{chart_yaml}: must be a mapping")
    values = _merged_values(tree, app, limits)
    release = release_name(app)
    request = {
        "chart": str(tree.real(app.path, app.path)),
        "release": release,
        "namespace": app.namespace or "default",
        "values": _values_json(values, app),
        "declared": _declared_dependencies(metadata, chart_yaml),
        "max_output_bytes": limits.max_output_bytes,
    }
    subject = app.path or "."
    reply = pool.render(request, subject=subject, limits=limits, deadline=deadline)
    if "helm_error" in reply:
        raise RenderError(f"{subject}: helm: {_clean_error(reply['helm_error'], tree)}")
    if "missing_dependency" in reply:
        raise RenderError(
            f"{chart_yaml}: dependency {reply['missing_dependency']!r} is not vendored in "
            "charts/; Sluice renders offline, so run `helm dependency build` and commit charts/"
        )
    problem = reply.get("render_error")
    if problem == "invalid_release":
        raise RenderError(
            f"helm.release: {release!r} is not a valid release name "
            "(at most 53 characters: lowercase letters, digits, '-' and '.')"
        )
    if problem == "output_too_large":
        raise RenderError(
            f"{subject}: helm output is over the {limits.max_output_bytes}-byte limit"
        )
    if problem is not None:
        raise RenderError(f"{subject}: helm render failed ({problem})")
    return _parse_output([(name, text) for name, text in reply["rendered"]], app, limits)


def _values_json(values: dict[str, Any], app: App) -> str:
    try:
        return json.dumps(values)
    except (TypeError, ValueError, RecursionError):
        raise RenderError(f"{app.path or '.'}: helm values are nested too deeply") from None


def _declared_dependencies(metadata: dict[str, Any], source: str) -> list[Any]:
    declared = metadata.get("dependencies") or []
    if not isinstance(declared, list):
        raise RenderError(f"{source}: dependencies must be a list")
    return [dep.get("name") if isinstance(dep, dict) else None for dep in declared]


def _merged_values(tree: ExportTree, app: App, limits: RenderLimits) -> dict[str, Any]:
    """Values files merged in order, later files winning (like repeated ``-f``)."""
    merged: dict[str, Any] = {}
    for rel in values_files(tree, app):
        data = load_yaml_document(tree.read_bytes(rel, limits), rel, limits)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise RenderError(f"{rel}: a values file must be a mapping")
        merged = _merge(merged, data)
    if app.helm.inline:
        merged = _merge(merged, json.loads(app.helm.inline))
    for name, value, force_string in app.helm.parameters:
        set_parameter(merged, name, value, force_string=force_string)
    return merged


_merge = deep_merge


def _parse_output(
    rendered: list[tuple[str, str]], app: App, limits: RenderLimits
) -> list[K8sObject]:
    output_limits = limits.for_output()
    total = sum(len(text) for _, text in rendered)
    if total > limits.max_output_bytes:
        raise RenderError(
            f"{app.path}: helm output is over the {limits.max_output_bytes}-byte limit"
        )
    objects: list[K8sObject] = []
    for name, text in rendered:
        if name.endswith("/NOTES.txt") or not text.strip():
            continue
        # "<chart>/templates/x.yaml" -> "<app path>/templates/x.yaml"
        inner = name.split("/", 1)[-1]
        source = f"{app.path}/{inner}" if app.path else inner
        objects.extend(load_manifests(text, source, output_limits))
        if len(objects) > limits.max_objects:
            raise RenderError(
                f"{app.path}: more than {limits.max_objects} objects (limit max_objects)"
            )
    return objects


def _clean_error(message: str, tree: ExportTree) -> str:
    text = message.replace(f"{tree.root}/", "").replace(str(tree.root), ".")
    text = " ".join(text.split())
    text = _GO_TYPE_DUMP.sub("map[…]", redact_quoted(text))
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 1] + "…"
    return text

"""Helm apps: ``helm template`` through Helm's own Go engine, in-process (helm-python-sdk).

Charts render offline from the exported revision only: subcharts must be
vendored in the chart's ``charts/`` directory, values files are repo paths
inside the export, and the chart directory may not contain a symlink that
leaves the export (Helm's loader would follow it).
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from typing import Any

import helm_python

from bot.models import App, K8sObject
from bot.render.limits import RenderError, RenderLimits
from bot.render.manifests import load_manifests, load_yaml_document, redact_quoted
from bot.render.tree import ExportTree

_MAX_ERROR_CHARS = 400
_GO_TYPE_DUMP = re.compile(r"map\[[^\[\]]*\]")


def helm_engine_version() -> str:
    return f"helm:{helm_python.helm_sdk_version()}:{helm_python.__version__}"


def chart_file(directory: str) -> str:
    return f"{directory}/Chart.yaml" if directory else "Chart.yaml"


def values_files(tree: ExportTree, app: App) -> list[str]:
    """The app's values files as repo paths (absolute or escaping paths are refused)."""
    files = []
    for ref in app.helm.values:
        rel = tree.join("", ref, "helm.values")
        if not tree.is_file(rel, "helm.values"):
            raise RenderError(f"helm.values: {ref!r} not found in the repository")
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
    tree: ExportTree, app: App, limits: RenderLimits, deadline: float
) -> list[K8sObject]:
    chart_yaml = chart_file(app.path)
    if not tree.is_file(chart_yaml, chart_yaml):
        raise RenderError(f"{app.path or '.'}: no Chart.yaml, not a Helm chart")
    metadata = load_yaml_document(tree.read_bytes(chart_yaml, limits), chart_yaml, limits)
    if not isinstance(metadata, dict):
        raise RenderError(f"{chart_yaml}: must be a mapping")
    values = _merged_values(tree, app, limits)
    release = release_name(app)
    try:
        helm_python.validate_release_name(release)
    except helm_python.HelmError:
        raise RenderError(
            f"helm.release: {release!r} is not a valid release name "
            "(at most 53 characters: lowercase letters, digits, '-' and '.')"
        ) from None

    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise RenderError(f"{app.path}: render timed out after {limits.timeout_s:g}s")
    # The Go engine cannot be interrupted: render in a helper thread and stop
    # waiting at the deadline (an abandoned render finishes on its own).
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sluice-helm")
    try:
        future = executor.submit(
            _render_chart, tree, app, metadata, values, release, app.namespace or "default"
        )
        rendered = future.result(timeout=remaining)
    except concurrent.futures.TimeoutError:
        raise RenderError(f"{app.path}: render timed out after {limits.timeout_s:g}s") from None
    except helm_python.HelmError as exc:
        raise RenderError(f"{app.path}: helm: {_clean_error(str(exc), tree)}") from None
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    return _parse_output(rendered, app, limits)


def _render_chart(
    tree: ExportTree,
    app: App,
    metadata: dict[str, Any],
    values: dict[str, Any],
    release: str,
    namespace: str,
) -> list[tuple[str, str]]:
    """(chart-relative file name, manifest text) for CRDs, then templates."""
    with helm_python.Chart.load(tree.real(app.path, app.path)) as chart:
        _check_dependencies(chart, metadata, chart_file(app.path))
        crds = [(crd["filename"], crd["data"]) for crd in chart.crds]
        templates = chart.render(values, name=release, namespace=namespace, is_install=True)
    return crds + sorted(templates.items())


def _check_dependencies(chart: helm_python.Chart, metadata: dict[str, Any], source: str) -> None:
    vendored = {dep.get("name") for dep in chart.dependencies}
    declared = metadata.get("dependencies") or []
    if not isinstance(declared, list):
        raise RenderError(f"{source}: dependencies must be a list")
    for dep in declared:
        name = dep.get("name") if isinstance(dep, dict) else None
        if name not in vendored:
            raise RenderError(
                f"{source}: dependency {name!r} is not vendored in charts/; Sluice renders "
                "offline, so run `helm dependency build` and commit charts/"
            )


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
    return merged


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


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

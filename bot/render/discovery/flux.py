"""Flux ``Kustomization`` and ``HelmRelease`` objects -> Sluice ``App`` values.

Rules followed (Flux docs): ``spec.path`` is relative to the source's root and a
directory without kustomization.yaml is built from every manifest below it;
``targetNamespace``, ``namePrefix``, ``nameSuffix``, ``patches`` and ``images`` are
applied as kustomization fields; ``postBuild.substitute`` wins over
``postBuild.substituteFrom``, where later entries win over earlier ones. A HelmRelease's
``chart.spec.valuesFiles`` are relative to the source's root and replace the chart's
own values.yaml; then ``valuesFrom`` in order, then inline ``values``; the release is
``[<targetNamespace>-]<name>`` unless ``releaseName`` says otherwise.
"""

from __future__ import annotations

import posixpath
from typing import Any

import yaml

from bot.models import App, AppSource, HelmSettings
from bot.render.discovery.argocd import check_patches
from bot.render.discovery.context import Context, canonical, repo_dir
from bot.render.discovery.envsubst import VAR_NAME
from bot.render.discovery.helmset import deep_merge
from bot.render.limits import RenderError, RenderLimits
from bot.render.manifests import load_yaml_document

KUSTOMIZATION_API = "kustomize.toolkit.fluxcd.io/"
HELMRELEASE_API = "helm.toolkit.fluxcd.io/"
SOURCE_API = "source.toolkit.fluxcd.io/"
DEFAULT_NAMESPACE = "flux-system"


def is_flux(obj: dict[str, Any]) -> bool:
    api = str(obj.get("apiVersion", ""))
    return (api.startswith(KUSTOMIZATION_API) and obj["kind"] == "Kustomization") or (
        api.startswith(HELMRELEASE_API) and obj["kind"] == "HelmRelease"
    )


def _ident(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or DEFAULT_NAMESPACE), str(meta.get("name"))


def _source(
    ref: Any, namespace: str, path: str | None, ctx: Context, where: str
) -> tuple[bool, str, str | None]:
    """(is this repo, how to name the source, the files that told us)."""
    if not isinstance(ref, dict) or not ref.get("kind") or not ref.get("name"):
        raise RenderError(f"{where}: sourceRef needs kind and name")
    kind, name = str(ref["kind"]), str(ref["name"])
    ns = str(ref.get("namespace") or namespace)
    shown = f"{kind} {ns}/{name}"
    if kind != "GitRepository":
        found = ctx.find(kind, ns, name)
        url = ((found[1].get("spec") or {}).get("url") if found else None) or shown
        return False, str(url), None
    found = ctx.find("GitRepository", ns, name)
    if found is None:
        if ctx.settings.repo_urls:
            return False, f"{shown} (not defined in this repository)", None
        return ctx.is_local(shown, path), shown, None
    url = str((found[1].get("spec") or {}).get("url", ""))
    return ctx.is_local(url, path), url or shown, found[0]


def kustomization_app(obj: dict[str, Any], file: str, ctx: Context, limits: RenderLimits) -> App:
    namespace, name = _ident(obj)
    spec = obj.get("spec") or {}
    where = f"{file}: Kustomization {namespace}/{name}"
    app_name = ctx.settings.flux_name.format(name=name, namespace=namespace)
    path = repo_dir(str(spec.get("path") or "."))
    if path is None:
        raise RenderError(f"{where}: spec.path must stay inside the repository")
    local, url, source_file = _source(spec.get("sourceRef"), namespace, path, ctx, where)
    watch = {file, *([source_file] if source_file else [])}
    target = spec.get("targetNamespace") or None
    if not local:
        return App(
            name=app_name,
            path=posixpath.dirname(file),
            namespace=target,
            watch=tuple(sorted(watch)),
            unrendered=(f"not rendered: external source {url} (path {path or '.'})",),
        )
    overlay: dict[str, Any] = {}
    if target:
        overlay["namespace"] = str(target)
    for field in ("namePrefix", "nameSuffix"):
        if spec.get(field):
            overlay[field] = str(spec[field])
    if spec.get("images"):
        overlay["images"] = [{k: str(v) for k, v in i.items()} for i in spec["images"]]
    if spec.get("patches"):
        overlay["patches"] = check_patches(spec["patches"], where)
    common = spec.get("commonMetadata") or {}
    if common.get("labels"):
        overlay["labels"] = [{"pairs": dict(common["labels"]), "includeSelectors": False}]
    if common.get("annotations"):
        overlay["commonAnnotations"] = dict(common["annotations"])
    substitute, unresolved, read = _post_build(spec.get("postBuild"), namespace, ctx, where, limits)
    watch |= read
    source = AppSource(
        path=path,
        renderer="auto",
        flux=True,
        overlay=canonical(overlay) if overlay else "",
        substitute=substitute,
        unresolved_from=unresolved,
    )
    return App(
        name=app_name, path=path, namespace=target, watch=tuple(sorted(watch)), sources=(source,)
    )


def _post_build(raw: Any, namespace: str, ctx: Context, where: str, limits: RenderLimits):
    if not raw:
        return None, (), set()
    variables: dict[str, str] = {}
    unresolved: list[str] = []
    read: set[str] = set()
    for ref in raw.get("substituteFrom") or []:
        kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
        found = ctx.find(kind, namespace, name) if kind == "ConfigMap" else None
        if found is None:
            why = "Secret values are never read" if kind == "Secret" else "not in this repository"
            unresolved.append(f"{kind} {namespace}/{name} ({why})")
            continue
        read.add(found[0])
        data = found[1].get("data") or {}
        variables |= {str(k): str(v) for k, v in data.items()}
    for key, value in (raw.get("substitute") or {}).items():
        variables[str(key)] = str(value)
    for key in variables:
        if not VAR_NAME.match(key):
            raise RenderError(f"{where}: postBuild: variable name {key!r} is not valid")
    return canonical(variables), tuple(unresolved), read


def helmrelease_app(obj: dict[str, Any], file: str, ctx: Context, limits: RenderLimits) -> App:
    namespace, name = _ident(obj)
    spec = obj.get("spec") or {}
    where = f"{file}: HelmRelease {namespace}/{name}"
    app_name = ctx.settings.flux_name.format(name=name, namespace=namespace)
    target = spec.get("targetNamespace") or None
    release = spec.get("releaseName") or (f"{target}-{name}" if target else name)
    chart = ((spec.get("chart") or {}).get("spec")) or {}
    watch = {file}
    if not chart:
        ref = spec.get("chartRef") or {}
        return App(
            name=app_name,
            path=posixpath.dirname(file),
            namespace=target or namespace,
            watch=(file,),
            unrendered=(
                f"not rendered: external source {ref.get('kind', 'chartRef')} {ref.get('name', '')}".rstrip(),
            ),
        )
    chart_path = repo_dir(str(chart.get("chart", "")))
    local, url, source_file = _source(chart.get("sourceRef"), namespace, chart_path, ctx, where)
    if source_file:
        watch.add(source_file)
    if not local or chart_path is None:
        return App(
            name=app_name,
            path=posixpath.dirname(file),
            namespace=target or namespace,
            watch=tuple(sorted(watch)),
            unrendered=(
                f"not rendered: external source {url} (chart {chart.get('chart')} {chart.get('version', '')})".rstrip(),
            ),
        )
    files = [
        str(f)
        for f in chart.get("valuesFiles")
        or ([chart["valuesFile"]] if chart.get("valuesFile") else [])
    ]
    inline: dict[str, Any] = {}
    if files:
        inline = _replace_defaults(ctx, chart_path, files, limits)
        watch |= {repo_dir(f) or f for f in files}
    partial: list[str] = []
    for ref in spec.get("valuesFrom") or []:
        values, read = _values_from(ref, namespace, ctx, where)
        if read:
            watch.add(read)
        if values is None:
            kind, ref_name = ref.get("kind"), ref.get("name")
            why = "Secret values are never read" if kind == "Secret" else "not in this repository"
            partial.append(f"not rendered: valuesFrom {kind} {namespace}/{ref_name} ({why})")
            continue
        inline = deep_merge(inline, values)
    if spec.get("values"):
        inline = deep_merge(inline, spec["values"])
    helm = HelmSettings(
        release=str(release),
        values=tuple("/" + (repo_dir(f) or f) for f in files),
        inline=canonical(inline) if inline else "",
    )
    source = AppSource(path=chart_path, renderer="helm", helm=helm)
    return App(
        name=app_name,
        path=chart_path,
        renderer="helm",
        namespace=target or namespace,
        watch=tuple(sorted(watch)),
        sources=(source,),
        unrendered=tuple(partial),
    )


def _replace_defaults(
    ctx: Context, chart_path: str, files: list[str], limits: RenderLimits
) -> dict[str, Any]:
    """Nulls for the chart's own defaults that the valuesFiles do not set: Flux uses the
    valuesFiles *instead of* values.yaml, and a null user value removes a Helm default."""
    merged: dict[str, Any] = {}
    for ref in files:
        rel = repo_dir(ref)
        if rel is None or not ctx.tree.is_file(rel, rel):
            raise RenderError(
                f"chart.spec.valuesFiles: {ref!r} not found (relative to the repo root)"
            )
        data = load_yaml_document(ctx.tree.read_bytes(rel, limits), rel, limits) or {}
        merged = deep_merge(merged, data)
    defaults_file = f"{chart_path}/values.yaml" if chart_path else "values.yaml"
    if not ctx.tree.is_file(defaults_file, defaults_file):
        return {}
    defaults = (
        load_yaml_document(ctx.tree.read_bytes(defaults_file, limits), defaults_file, limits) or {}
    )
    return _nulls(defaults, merged)


def _nulls(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in defaults.items():
        if key not in given:
            out[key] = None
        elif isinstance(value, dict) and isinstance(given[key], dict):
            nested = _nulls(value, given[key])
            if nested:
                out[key] = nested
    return out


def _values_from(
    ref: dict[str, Any], namespace: str, ctx: Context, where: str
) -> tuple[dict[str, Any] | None, str | None]:
    """The values a valuesFrom entry adds, and the file it read; None when unreadable."""
    kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
    key = str(ref.get("valuesKey") or "values.yaml")
    found = ctx.find("ConfigMap", namespace, name) if kind == "ConfigMap" else None
    if found is None:
        return None, None
    text = (found[1].get("data") or {}).get(key)
    if text is None:
        if ref.get("optional"):
            return {}, found[0]
        raise RenderError(f"{where}: valuesFrom ConfigMap {namespace}/{name} has no key {key!r}")
    if ref.get("targetPath"):
        values: dict[str, Any] = {}
        node = values
        parts = str(ref["targetPath"]).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = text
        return values, found[0]
    try:
        data = yaml.load(str(text), Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        raise RenderError(
            f"{where}: valuesFrom ConfigMap {namespace}/{name} key {key!r} is not valid YAML"
        ) from None
    if not isinstance(data, dict):
        raise RenderError(
            f"{where}: valuesFrom ConfigMap {namespace}/{name} key {key!r} is not a mapping"
        )
    return data, found[0]

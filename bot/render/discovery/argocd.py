"""Argo CD ``Application`` manifests -> Sluice ``App`` values (rendered as Argo CD would).

Rules followed (Argo CD user guide): ``sources`` replaces ``source``; Helm ``valueFiles``
are relative to the chart's directory and ``$<ref>/path`` to the root of the source with
that ``ref``; the release name defaults to the Application's name; precedence is
``parameters > valuesObject > values > valueFiles`` and ``valuesObject`` replaces
``values``; a directory source is not recursive unless ``directory.recurse``.
"""

from __future__ import annotations

import posixpath
from typing import Any

import yaml

from bot.models import App, AppSource, HelmSettings
from bot.render.discovery.context import Context, canonical, repo_dir
from bot.render.limits import RenderError

KINDS = {"Application", "ApplicationSet"}
# Helm options Sluice applies as Argo CD does (the rest would change the render unseen).
_HELM_FIELDS = {
    "releaseName", "valueFiles", "ignoreMissingValueFiles", "values", "valuesObject",
    "parameters", "passCredentials", "version",
}  # fmt: skip


def is_argocd(obj: dict[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith("argoproj.io/") and obj["kind"] in KINDS


def application_app(
    obj: dict[str, Any], file: str, ctx: Context, watch: tuple[str, ...] = ()
) -> App:
    """The App for one Application; raises RenderError for a malformed one."""
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    spec = obj.get("spec")
    if not isinstance(name, str) or not isinstance(spec, dict):
        raise RenderError(f"{file}: Application needs metadata.name and spec")
    where = f"{file}: Application {name}"
    app_name = ctx.settings.argocd_name.format(
        name=name, namespace=meta.get("namespace") or "argocd"
    )
    destination = spec.get("destination") or {}
    namespace = destination.get("namespace") or None
    raw_sources = spec.get("sources") or ([spec["source"]] if spec.get("source") else [])
    if not isinstance(raw_sources, list) or not all(isinstance(s, dict) for s in raw_sources):
        raise RenderError(f"{where}: spec.sources must be a list of mappings")
    refs = _refs(raw_sources, ctx)
    sources: list[AppSource] = []
    unrendered: list[str] = []
    extra_watch: set[str] = set()
    for raw in raw_sources:
        url = str(raw.get("repoURL", ""))
        path = raw.get("path")
        if raw.get("chart"):
            version = raw.get("targetRevision", "")
            unrendered.append(
                f"not rendered: external source {url} (chart {raw['chart']} {version})".rstrip()
            )
            continue
        if path is None and raw.get("ref"):
            continue  # a values-only source, used through $<ref>/...
        if not ctx.is_local(url, str(path) if path is not None else None):
            shown = f"{url} (path {path})" if path else url
            unrendered.append(f"not rendered: external source {shown}")
            continue
        rel = repo_dir(str(path or "."))
        if rel is None:
            raise RenderError(f"{where}: source path {path!r} must stay inside the repository")
        if raw.get("plugin") is not None:
            unrendered.append(f"not rendered: config management plugin source {url} (path {rel})")
            continue
        source, missing = _source(raw, rel, name, refs, where)
        if missing:
            unrendered.append(missing)
            continue
        sources.append(source)
        extra_watch |= {
            v.lstrip("/") if v.startswith("/") else posixpath.normpath(posixpath.join(rel, v))
            for v in source.helm.values
        }
    path = sources[0].path if sources else posixpath.dirname(file)
    return App(
        name=app_name,
        path=path,
        renderer=sources[0].renderer if len(sources) == 1 else "auto",
        namespace=namespace,
        watch=tuple(sorted({file, *watch, *(w for w in extra_watch if not w.startswith("../"))})),
        sources=tuple(sources),
        unrendered=tuple(unrendered),
    )


def _refs(raw_sources: list[dict[str, Any]], ctx: Context) -> dict[str, str | None]:
    """``ref`` name -> the repo URL when it is this repository, else None."""
    refs: dict[str, str | None] = {}
    for raw in raw_sources:
        ref = raw.get("ref")
        if isinstance(ref, str) and ref:
            url = str(raw.get("repoURL", ""))
            refs[ref] = url if ctx.is_local(url, str(raw.get("path") or ".")) else None
            if refs[ref] is None:
                refs[f"{ref}:url"] = url
    return refs


def _source(
    raw: dict[str, Any], rel: str, app: str, refs: dict[str, str | None], where: str
) -> tuple[AppSource, str | None]:
    renderer = "auto"
    helm = HelmSettings()
    if isinstance(raw.get("helm"), dict):
        renderer = "helm"
        helm_spec = raw["helm"]
        unsupported = sorted(set(helm_spec) - _HELM_FIELDS)
        if unsupported:
            raise RenderError(f"{where}: helm.{unsupported[0]} is not supported by Sluice")
        values: list[str] = []
        for ref in helm_spec.get("valueFiles") or []:
            ref = str(ref)
            if ref.startswith("$"):
                ref_name, _, rest = ref[1:].partition("/")
                if ref_name not in refs:
                    raise RenderError(
                        f"{where}: valueFiles: {ref!r} names no source with ref {ref_name!r}"
                    )
                if refs[ref_name] is None:
                    url = refs.get(f"{ref_name}:url")
                    return AppSource(
                        path=rel
                    ), f"not rendered: values file {ref} from external source {url}"
                values.append("/" + rest)
            else:
                values.append(ref)
        inline: dict[str, Any] | None = None
        if helm_spec.get("valuesObject") is not None:
            inline = helm_spec["valuesObject"]
        elif helm_spec.get("values"):
            inline = _values_text(helm_spec["values"], where)
        if inline is not None and not isinstance(inline, dict):
            raise RenderError(f"{where}: helm values must be a mapping")
        parameters = tuple(
            (str(p.get("name", "")), str(p.get("value", "")), bool(p.get("forceString", False)))
            for p in helm_spec.get("parameters") or []
            if isinstance(p, dict)
        )
        helm = HelmSettings(
            release=helm_spec.get("releaseName") or app,
            values=tuple(values),
            ignore_missing=bool(helm_spec.get("ignoreMissingValueFiles", False)),
            inline=canonical(inline) if inline else "",
            parameters=parameters,
        )
    else:
        helm = HelmSettings(release=app)
    overlay = ""
    if isinstance(raw.get("kustomize"), dict):
        renderer = "kustomize"
        overlay = _kustomize_overlay(raw["kustomize"], where)
    directory = raw.get("directory") if isinstance(raw.get("directory"), dict) else None
    if directory is not None:
        renderer = "plain"
        if directory.get("jsonnet"):
            return AppSource(path=rel), f"not rendered: jsonnet directory source {rel}"
    directory = directory or {}
    return (
        AppSource(
            path=rel,
            renderer=renderer,
            helm=helm,
            recurse=bool(directory.get("recurse", False)),
            include=str(directory.get("include") or ""),
            exclude=str(directory.get("exclude") or ""),
            overlay=overlay,
        ),
        None,
    )


def _values_text(text: Any, where: str) -> Any:
    if isinstance(text, dict):
        return text
    try:
        return yaml.load(str(text), Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        raise RenderError(f"{where}: helm.values is not valid YAML") from None


def _kustomize_overlay(spec: dict[str, Any], where: str) -> str:
    overlay: dict[str, Any] = {}
    for field in ("namePrefix", "nameSuffix", "namespace"):
        if spec.get(field):
            overlay[field] = str(spec[field])
    if spec.get("commonLabels"):
        overlay["commonLabels"] = {str(k): str(v) for k, v in spec["commonLabels"].items()}
    if spec.get("commonAnnotations"):
        overlay["commonAnnotations"] = {
            str(k): str(v) for k, v in spec["commonAnnotations"].items()
        }
    if spec.get("images"):
        overlay["images"] = [parse_image(str(image), where) for image in spec["images"]]
    if spec.get("replicas"):
        overlay["replicas"] = [
            {"name": r["name"], "count": int(r["count"])} for r in spec["replicas"]
        ]
    if spec.get("patches"):
        overlay["patches"] = check_patches(spec["patches"], where)
    unsupported = sorted(
        set(spec) - {*overlay, "version", "forceCommonLabels", "forceCommonAnnotations"}
    )
    if unsupported:
        raise RenderError(f"{where}: kustomize.{unsupported[0]} is not supported by Sluice")
    return canonical(overlay) if overlay else ""


def check_patches(patches: Any, where: str) -> list[dict[str, Any]]:
    """Inline patches only: a ``path`` would read a file the app's own tree does not list."""
    if not isinstance(patches, list):
        raise RenderError(f"{where}: patches must be a list")
    out = []
    for index, patch in enumerate(patches):
        if not isinstance(patch, dict) or not isinstance(patch.get("patch"), str):
            raise RenderError(
                f"{where}: patches[{index}] must have an inline patch (path is not supported)"
            )
        out.append({k: patch[k] for k in ("patch", "target", "options") if k in patch})
    return out


def parse_image(text: str, where: str) -> dict[str, str]:
    """Argo CD's ``[old=]name[:tag|@digest]`` image override as a kustomize images entry."""
    old, _, new = text.rpartition("=")
    reference = new
    name, tag, digest = reference, "", ""
    if "@" in reference:
        name, _, digest = reference.partition("@")
    else:
        head, _, last = reference.rpartition("/")
        if ":" in last:
            image, _, tag = last.rpartition(":")
            name = f"{head}/{image}" if head else image
    if not name:
        raise RenderError(f"{where}: kustomize.images: {text!r} is not an image reference")
    entry = {"name": old or name}
    if old:
        entry["newName"] = name
    if tag:
        entry["newTag"] = tag
    if digest:
        entry["digest"] = digest
    return entry

"""Render an app discovered from Argo CD or Flux: each local source as its engine would,
the engine's kustomization options as an overlay, Flux's postBuild substitution last.

Argo CD applies ``kustomize`` options with ``kustomize edit`` and Flux edits the
kustomization it builds; Sluice writes the same fields into an overlay kustomization
in a temporary directory whose only resource is the source's own render, so the
export is never modified and nothing outside it is read.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bot.models import App, AppSource, K8sObject, RenderedApp
from bot.render.cache import RenderCache
from bot.render.discovery.envsubst import Substitution, substitute_objects
from bot.render.engine import plan_render
from bot.render.kustomize import find_kustomization, kubectl_version_token, run_kustomize
from bot.render.limits import RenderError, RenderLimits
from bot.render.manifests import load_manifests
from bot.render.plain import MANIFEST_SUFFIXES
from bot.render.tree import ExportTree

if TYPE_CHECKING:
    from bot.render.engine import RenderEngine


def is_discovered(app: App) -> bool:
    return bool(app.sources or app.unrendered)


def _kind(source: AppSource, tree: ExportTree) -> str:
    """The renderer a source resolves to: ``directory`` (Argo CD), ``generated`` (Flux),
    ``kustomize`` or ``helm``."""
    if source.renderer in ("kustomize", "helm"):
        return source.renderer
    has_kustomization = find_kustomization(tree, source.path) is not None
    if source.flux:
        return "kustomize" if has_kustomization else "generated"
    if source.renderer == "plain":
        return "directory"
    chart = f"{source.path}/Chart.yaml" if source.path else "Chart.yaml"
    if has_kustomization:
        return "kustomize"
    return "helm" if tree.is_file(chart, chart) else "directory"


def _sub_app(app: App, source: AppSource, renderer: str) -> App:
    return App(
        name=app.name,
        path=source.path,
        renderer=renderer,
        namespace=app.namespace,
        helm=source.helm,
    )  # type: ignore[arg-type]


def _directory_files(tree: ExportTree, source: AppSource, recurse: bool) -> list[str]:
    prefix = f"{source.path}/" if source.path else ""
    files = []
    for rel in tree.walk(source.path, source.path or "."):
        inner = rel[len(prefix) :]
        if not rel.endswith(MANIFEST_SUFFIXES) or (not recurse and "/" in inner):
            continue
        if source.include and not _argo_glob(source.include).fullmatch(inner):
            continue
        if source.exclude and _argo_glob(source.exclude).fullmatch(inner):
            continue
        files.append(rel)
    return files


def _argo_glob(pattern: str) -> re.Pattern[str]:
    """Argo CD's directory include/exclude: ``*`` spans ``/``, ``{a,b}`` alternatives."""
    out, depth = [], 0
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "{":
            out.append("(?:")
            depth += 1
        elif char == "}" and depth:
            out.append(")")
            depth -= 1
        elif char == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out))


def source_inputs(app: App, source: AppSource, tree: ExportTree, limits: RenderLimits) -> set[str]:
    kind = _kind(source, tree)
    if kind in ("directory", "generated"):
        inputs: set[str] = set()
        for rel in _directory_files(tree, source, kind == "generated" or source.recurse):
            inputs |= tree.inputs_for(rel, rel)
        return inputs
    return set(plan_render(_sub_app(app, source, kind), tree, limits).inputs)


def discovered_inputs(app: App, root: Path, limits: RenderLimits) -> set[str]:
    tree = ExportTree(root)
    inputs: set[str] = set()
    for source in app.sources:
        inputs |= source_inputs(app, source, tree, limits)
    return inputs


def render_discovered(
    engine: RenderEngine, app: App, root: Path, limits: RenderLimits, cache: RenderCache | None
) -> RenderedApp:
    notes = list(app.unrendered)
    if not app.sources:
        return RenderedApp(app, "external", unrendered=tuple(notes))
    objects: list[K8sObject] = []
    inputs: set[str] = set()
    renderers: list[str] = []
    try:
        tree = ExportTree(root)
        for source in app.sources:
            kind = _kind(source, tree)
            renderers.append("plain" if kind in ("directory", "generated") else kind)
            inputs |= source_inputs(app, source, tree, limits)
            rendered = _render_source(engine, app, source, kind, tree, limits, cache)
            if source.overlay:
                rendered = _overlay(engine, rendered, source.overlay, limits, cache)
            if source.substitute is not None:
                rendered, unresolved = _substitute(rendered, source, app)
                notes.extend(unresolved)
            objects.extend(rendered)
    except RenderError as exc:
        return RenderedApp(
            app, "+".join(renderers) or "unknown", error=str(exc), inputs=frozenset(inputs)
        )
    except OSError as exc:
        message = f"{app.path or '.'}: cannot read the app's files ({exc.strerror or exc})"
        return RenderedApp(app, "+".join(renderers), error=message, inputs=frozenset(inputs))
    if len(objects) > limits.max_objects:
        error = f"{app.path or '.'}: {len(objects)} objects, over the limit of {limits.max_objects} (max_objects)"
        return RenderedApp(app, "+".join(renderers), error=error, inputs=frozenset(inputs))
    return RenderedApp(
        app, "+".join(renderers), objects=objects, inputs=frozenset(inputs), unrendered=tuple(notes)
    )


def _render_source(
    engine: RenderEngine,
    app: App,
    source: AppSource,
    kind: str,
    tree: ExportTree,
    limits: RenderLimits,
    cache: RenderCache | None,
) -> list[K8sObject]:
    if kind in ("kustomize", "helm"):
        result = engine.render(_sub_app(app, source, kind), tree.root, limits=limits, cache=cache)
        if result.error:
            raise RenderError(result.error)
        return result.objects
    objects: list[K8sObject] = []
    for rel in _directory_files(tree, source, kind == "generated" or source.recurse):
        text = tree.read_bytes(rel, limits)
        if kind == "generated":
            # Flux's generated kustomization lists only the files holding Kubernetes objects.
            try:
                docs = [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d is not None]
            except yaml.YAMLError:
                docs = None  # load_manifests reports it
            if docs is not None and not all(
                isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs
            ):
                continue
        objects.extend(load_manifests(text, rel, limits))
    return objects


def _overlay(
    engine: RenderEngine,
    objects: list[K8sObject],
    overlay: str,
    limits: RenderLimits,
    cache: RenderCache | None,
) -> list[K8sObject]:
    rendered = json.dumps(objects, sort_keys=True).encode()

    def run() -> list[K8sObject]:
        fields: dict[str, Any] = json.loads(overlay)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["resources.yaml"],
            **fields,
        }
        with tempfile.TemporaryDirectory(prefix="sluice-overlay-") as scratch:
            (Path(scratch) / "resources.yaml").write_text(
                yaml.dump_all(objects, Dumper=yaml.CSafeDumper)
            )
            (Path(scratch) / "kustomization.yaml").write_text(
                yaml.dump(kustomization, Dumper=yaml.CSafeDumper)
            )
            deadline = time.monotonic() + limits.timeout_s
            output = run_kustomize(
                engine.kubectl(),
                ExportTree(Path(scratch)),
                "",
                limits,
                deadline,
                _secret_strings(objects),
                engine.sandbox,
            )
        return load_manifests(output, "kustomize overlay output", limits.for_output())

    if cache is None:
        return run()
    settings = {
        "renderer": "overlay",
        "overlay": overlay,
        "engine": kubectl_version_token(engine.kubectl()),
        "limits": limits.cache_token(),
    }
    return cache.get_or_render(RenderCache.key(settings, [("objects", rendered)]), run)


def _secret_strings(objects: list[K8sObject]) -> frozenset[str]:
    values: set[str] = set()
    for obj in objects:
        if obj.get("kind") == "Secret":
            for section in ("data", "stringData"):
                values |= {str(v) for v in (obj.get(section) or {}).values()}
    return frozenset(v for v in values if len(v) >= 3)


def _substitute(
    objects: list[K8sObject], source: AppSource, app: App
) -> tuple[list[K8sObject], list[str]]:
    variables = json.loads(source.substitute or "{}")
    substitution = Substitution(variables, partial=bool(source.unresolved_from))
    out = substitute_objects(objects, substitution, app.name)
    notes = []
    if substitution.unresolved:
        names = ", ".join(sorted(substitution.unresolved))
        sources = "; ".join(source.unresolved_from)
        notes.append(f"unresolved postBuild variables {names}: from {sources}; left as written")
    return out, notes

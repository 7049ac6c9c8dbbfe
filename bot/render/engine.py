"""Render apps from an exported revision: pick the renderer, confine it, cache it, run it."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bot.models import App, K8sObject, RenderedApp
from bot.render.cache import RenderCache
from bot.render.helm import chart_file, helm_engine_version, helm_inputs, release_name, render_helm
from bot.render.helm_pool import HelmPool
from bot.render.kustomize import (
    KustomizeTree,
    find_kubectl,
    find_kustomization,
    kubectl_version_token,
    run_kustomize,
    walk_kustomization,
)
from bot.render.limits import NOT_RENDERED, RenderError, RenderLimits
from bot.render.manifests import load_manifests
from bot.render.plain import MANIFEST_SUFFIXES, render_plain
from bot.render.sandbox import Sandbox
from bot.render.tree import ExportTree

PLAIN_ENGINE = "plain:1"


@dataclass(frozen=True)
class RenderPlan:
    """What rendering one app involves, found statically before anything runs."""

    app: App
    renderer: str
    directory: str
    inputs: frozenset[str]
    kustomization: KustomizeTree | None = None


def resolve_renderer(app: App, tree: ExportTree) -> tuple[str, str]:
    """(app directory, renderer to use): ``auto`` picks Kustomize, then Helm, then plain."""
    directory = tree.join("", app.path, "path") if app.path else ""
    resolved = tree.real(directory, directory or ".")
    if not resolved.is_dir():
        raise RenderError(f"{directory or '.'}: app path is not a directory in this revision")
    return directory, _resolve_renderer(app, tree, directory)


def plan_render(app: App, tree: ExportTree, limits: RenderLimits) -> RenderPlan:
    """Resolve the renderer and every input file; refuses anything that leaves the export."""
    directory, renderer = resolve_renderer(app, tree)
    # Sweep the app directory: a symlink out of the export is refused even if unused.
    files = tree.walk(directory, directory or ".")
    if renderer == "kustomize":
        kustomization = walk_kustomization(tree, directory, limits)
        return RenderPlan(app, renderer, directory, frozenset(kustomization.inputs), kustomization)
    if renderer == "helm":
        return RenderPlan(app, renderer, directory, frozenset(helm_inputs(tree, app, files)))
    inputs: set[str] = set()
    for rel in files:
        if rel.endswith(MANIFEST_SUFFIXES):
            inputs |= tree.inputs_for(rel, rel)
    return RenderPlan(app, renderer, directory, frozenset(inputs))


def _resolve_renderer(app: App, tree: ExportTree, directory: str) -> str:
    has_kustomization = find_kustomization(tree, directory) is not None
    has_chart = tree.is_file(chart_file(directory), chart_file(directory))
    shown = directory or "."
    if app.renderer == "kustomize" and not has_kustomization:
        raise RenderError(f"{shown}: renderer is kustomize but there is no kustomization.yaml")
    if app.renderer == "helm" and not has_chart:
        raise RenderError(f"{shown}: renderer is helm but there is no Chart.yaml")
    if app.renderer != "auto":
        return app.renderer
    if has_kustomization:
        return "kustomize"
    return "helm" if has_chart else "plain"


def render_inputs(app: App, root: Path, limits: RenderLimits | None = None) -> set[str]:
    """Repo-relative paths of every file rendering ``app`` reads, found statically.

    Raises :class:`RenderError` when they cannot be determined safely.
    """
    if app.sources or app.unrendered:
        from bot.render.discovery.render import discovered_inputs

        return discovered_inputs(app, root, limits or RenderLimits())
    return set(plan_render(app, ExportTree(root), limits or RenderLimits()).inputs)


class RenderEngine:
    """Renders apps; holds the kubectl location, the sandbox and the Helm workers, and
    counts the renders it actually ran.

    Every renderer runs in a confined child process (:mod:`bot.render.sandbox`); Helm
    renders go to a small pool of long-lived workers (:mod:`bot.render.helm_pool`).
    Close the engine (or use it as a context manager) to stop its workers.
    """

    def __init__(
        self,
        kubectl: str | None = None,
        sandbox: Sandbox | None = None,
        *,
        cpu_budget_s: float | None = None,
    ) -> None:
        self._kubectl = kubectl
        self._cpu_budget_s = cpu_budget_s
        self._lock = threading.Lock()
        self._renders = 0
        self.sandbox = sandbox or Sandbox()
        self._helm = HelmPool(self.sandbox)
        self._finalizer = weakref.finalize(self, self._helm.close)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> RenderEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def renders(self) -> int:
        """How many renders ran (cache hits excluded)."""
        with self._lock:
            return self._renders

    def kubectl(self) -> str:
        with self._lock:
            if self._kubectl is None:
                self._kubectl = find_kubectl()
            return self._kubectl

    def render(
        self,
        app: App,
        root: Path,
        *,
        limits: RenderLimits | None = None,
        cache: RenderCache | None = None,
    ) -> RenderedApp:
        limits = limits or RenderLimits()
        if app.sources or app.unrendered:  # discovered from Argo CD / Flux manifests
            from bot.render.discovery.render import render_discovered

            return render_discovered(self, app, root, limits, cache)
        deadline = time.monotonic() + limits.timeout_s
        renderer = app.renderer if app.renderer != "auto" else "unknown"
        inputs: frozenset[str] = frozenset()
        try:
            tree = ExportTree(root)
            renderer = resolve_renderer(app, tree)[1]
            plan = plan_render(app, tree, limits)
            renderer, inputs = plan.renderer, plan.inputs
            objects = self._objects(plan, tree, limits, cache, deadline)
        except RenderError as exc:
            return RenderedApp(app, renderer, error=str(exc), inputs=inputs)
        except OSError as exc:
            message = f"{app.path or '.'}: cannot read the app's files ({exc.strerror or exc})"
            return RenderedApp(app, renderer, error=message, inputs=inputs)
        except RecursionError:
            message = f"{app.path or '.'}: the app's manifests are nested too deeply to read"
            return RenderedApp(app, renderer, error=message, inputs=inputs)
        except (ValueError, TypeError) as exc:
            # A parse failure nobody foresaw is still this app's error, not the preview's.
            # The exception text may quote file content (a Secret): only its type is shown.
            message = (
                f"{app.path or '.'}: cannot read the rendered manifests ({type(exc).__name__})"
            )
            return RenderedApp(app, renderer, error=message, inputs=inputs)
        return RenderedApp(app, renderer, objects=objects, inputs=inputs)

    def render_many(
        self,
        apps: Sequence[App],
        root: Path,
        *,
        limits: RenderLimits | None = None,
        cache: RenderCache | None = None,
        workers: int | None = None,
    ) -> list[RenderedApp]:
        if not apps:
            return []
        workers = max(1, min(workers or os.cpu_count() or 1, len(apps)))
        if len(apps) > 1:
            # Kustomize apps share kubectl processes (bot.render.batch); same results.
            from bot.render.batch import render_many

            return render_many(self, apps, root, limits or RenderLimits(), cache, workers)
        with ThreadPoolExecutor(workers, thread_name_prefix="sluice-render") as pool:
            return list(pool.map(lambda a: self.render(a, root, limits=limits, cache=cache), apps))

    def cache_key(
        self, plan: RenderPlan, files: list[tuple[str, bytes]], limits: RenderLimits
    ) -> str:
        """The render cache key of ``plan`` given its input files' bytes."""
        return RenderCache.key(self._settings(plan, limits), files)

    def budget_spent(self) -> bool:
        """Whether the renders' CPU budget is used up (every further render is refused)."""
        budget = self._cpu_budget_s
        return budget is not None and self.sandbox.cpu_used_s >= budget

    def count_renders(self, count: int) -> None:
        with self._lock:
            self._renders += count

    def _objects(
        self,
        plan: RenderPlan,
        tree: ExportTree,
        limits: RenderLimits,
        cache: RenderCache | None,
        deadline: float,
    ) -> list[K8sObject]:
        def run() -> list[K8sObject]:
            # Only the files the cache key hashes are there to read (see ExportTree.confined).
            with tree.confined(plan.inputs) as only:
                objects = self._run(plan, only, limits, deadline)
            if len(objects) > limits.max_objects:
                raise RenderError(
                    f"{plan.directory or '.'}: {len(objects)} objects, over the limit of "
                    f"{limits.max_objects} (max_objects)"
                )
            return objects

        if cache is None:
            for rel in plan.inputs:
                tree.read_bytes(rel, limits)  # enforces the file size limit up front
            return run()
        files = [(rel, tree.read_bytes(rel, limits)) for rel in plan.inputs]
        return cache.get_or_render(self.cache_key(plan, files, limits), run)

    def _run(
        self, plan: RenderPlan, tree: ExportTree, limits: RenderLimits, deadline: float
    ) -> list[K8sObject]:
        budget = self._cpu_budget_s
        if budget is not None and self.sandbox.cpu_used_s >= budget:
            raise RenderError(
                f"{plan.directory or '.'}: {NOT_RENDERED} its {budget:g} render CPU seconds "
                "are used up (SLUICE_PREVIEW_RENDER_CPU_S)"
            )
        with self._lock:
            self._renders += 1
        if plan.renderer == "kustomize":
            assert plan.kustomization is not None
            sensitive = plan.kustomization.check(tree, limits)
            output = run_kustomize(
                self.kubectl(), tree, plan.directory, limits, deadline, sensitive, self.sandbox
            )
            source = f"{plan.directory or '.'} (kustomize output)"
            return load_manifests(output, source, limits.for_output())
        if plan.renderer == "helm":
            return render_helm(tree, plan.app, limits, deadline, self._helm)
        return render_plain(tree, plan.directory, limits, deadline)

    def _settings(self, plan: RenderPlan, limits: RenderLimits) -> dict[str, object]:
        settings: dict[str, object] = {
            "renderer": plan.renderer,
            "path": plan.directory,
            "namespace": plan.app.namespace,
            "limits": limits.cache_token(),
        }
        if plan.renderer == "kustomize":
            settings["engine"] = kubectl_version_token(self.kubectl())
        elif plan.renderer == "helm":
            settings["engine"] = helm_engine_version()
            settings["release"] = release_name(plan.app)
            settings["values"] = list(plan.app.helm.values)
            helm = plan.app.helm
            settings["helm"] = [
                helm.ignore_missing,
                helm.inline,
                [list(p) for p in helm.parameters],
            ]
        else:
            settings["engine"] = PLAIN_ENGINE
        return settings


def render_app(
    app: App,
    root: Path,
    *,
    limits: RenderLimits | None = None,
    cache: RenderCache | None = None,
    engine: RenderEngine | None = None,
) -> RenderedApp:
    """Render one app from the exported revision at ``root``; errors land in ``.error``."""
    if engine is not None:
        return engine.render(app, root, limits=limits, cache=cache)
    with RenderEngine() as own:
        return own.render(app, root, limits=limits, cache=cache)


def render_apps(
    apps: Sequence[App],
    root: Path,
    *,
    limits: RenderLimits | None = None,
    cache: RenderCache | None = None,
    workers: int | None = None,
    engine: RenderEngine | None = None,
) -> list[RenderedApp]:
    """Render ``apps`` in parallel (``workers`` threads, default one per CPU), in order."""
    if engine is not None:
        return engine.render_many(apps, root, limits=limits, cache=cache, workers=workers)
    with RenderEngine() as own:
        return own.render_many(apps, root, limits=limits, cache=cache, workers=workers)

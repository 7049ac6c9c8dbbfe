"""Find the Argo CD and Flux apps of an exported revision."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config.repo import DiscoverSettings
from bot.models import ANY_APP_NAME, App
from bot.render.affected import glob_regex
from bot.render.discovery.appset import expand_appset
from bot.render.discovery.argocd import application_app, is_argocd
from bot.render.discovery.context import Context
from bot.render.discovery.flux import SOURCE_API, helmrelease_app, is_flux, kustomization_app
from bot.render.limits import RenderError, RenderLimits
from bot.render.manifests import load_manifests
from bot.render.tree import ExportTree

_MARKERS = (b"argoproj.io/", b"toolkit.fluxcd.io/", b"ConfigMap")


@dataclass
class Discovery:
    apps: list[App] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Manifests that could not be turned into apps: these fail the gate, never vanish.
    errors: list[str] = field(default_factory=list)


def discover_apps(
    root: Path, settings: DiscoverSettings, limits: RenderLimits | None = None
) -> Discovery:
    limits = limits or RenderLimits()
    try:
        tree = ExportTree(root)
        ctx = Context(tree, settings)
        manifests = _scan(tree, settings, limits, ctx)
    except RenderError as exc:
        return Discovery(errors=[f"discovery: {exc}"])
    found: list[App] = []
    for file, obj in manifests:
        try:
            found.extend(_apps(file, obj, ctx, limits))
        except RenderError as exc:
            ctx.errors.append(str(exc))
    for app in [a for a in found if not ANY_APP_NAME.match(a.name)]:
        ctx.errors.append(
            f"discovery: {app.name!r} is not a valid app name (check discover.*.name)"
        )
    found = [a for a in found if ANY_APP_NAME.match(a.name)]
    counts = Counter(app.name for app in found)
    for name, count in sorted(counts.items()):
        if count > 1:
            ctx.errors.append(
                f"discovery: {count} manifests define the app {name!r}; names must be unique"
            )
    apps = [app for app in found if counts[app.name] == 1]
    return Discovery(apps=sorted(apps, key=lambda a: a.name), notes=ctx.notes, errors=ctx.errors)


def describe(discovery: Discovery) -> str:
    """One line for the report: which apps were found where."""
    argocd = [a.name for a in discovery.apps if a.name.startswith("argocd:")]
    flux = [a.name for a in discovery.apps if not a.name.startswith("argocd:")]
    parts = []
    for label, names in (("Argo CD", argocd), ("Flux", flux)):
        if names:
            shown = ", ".join(names[:20]) + (
                f" and {len(names) - 20} more" if len(names) > 20 else ""
            )
            parts.append(f"{len(names)} {label} app{'s' if len(names) != 1 else ''} ({shown})")
    return "discovered " + (" and ".join(parts) if parts else "no Argo CD or Flux apps")


def _apps(file: str, obj: dict[str, Any], ctx: Context, limits: RenderLimits) -> list[App]:
    kind = obj["kind"]
    if kind == "Application":
        return [application_app(obj, file, ctx)]
    if kind == "ApplicationSet":
        expansion = expand_appset(obj, file, ctx, limits)
        return [application_app(app, file, ctx, files) for app, files in expansion.applications]
    if kind == "Kustomization":
        return [kustomization_app(obj, file, ctx, limits)]
    return [helmrelease_app(obj, file, ctx, limits)]


def _scan(
    tree: ExportTree, settings: DiscoverSettings, limits: RenderLimits, ctx: Context
) -> list[tuple[str, dict[str, Any]]]:
    """Engine manifests in the configured paths; ConfigMaps and GitRepositories indexed."""
    argocd = [glob_regex(p) for p in settings.argocd or ()]
    flux = [glob_regex(p) for p in settings.flux or ()]
    manifests: list[tuple[str, dict[str, Any]]] = []
    for rel in tree.walk("", "."):
        if not rel.endswith((".yaml", ".yml", ".json")) or rel.startswith("."):
            continue
        in_argocd = any(_matches(p, rel) for p in argocd)
        in_flux = any(_matches(p, rel) for p in flux)
        if not (in_argocd or in_flux):
            continue
        text = tree.read_bytes(rel, limits)
        if not any(marker in text for marker in _MARKERS):
            continue
        try:
            objects = load_manifests(text, rel, limits)
        except RenderError as exc:
            if b"argoproj.io/" in text or b"toolkit.fluxcd.io/" in text:
                ctx.notes.append(f"skipped {rel}: {exc}")
            continue
        for obj in objects:
            meta = obj.get("metadata") or {}
            if obj["kind"] in ("ConfigMap", "GitRepository", "OCIRepository", "HelmRepository"):
                if obj["kind"] == "ConfigMap" or str(obj.get("apiVersion", "")).startswith(
                    SOURCE_API
                ):
                    ns = str(meta.get("namespace") or "flux-system")
                    ctx.objects.setdefault((obj["kind"], ns, str(meta.get("name"))), (rel, obj))
            elif (in_argocd and is_argocd(obj)) or (in_flux and is_flux(obj)):
                manifests.append((rel, obj))
    return manifests


def _matches(pattern: Any, rel: str) -> bool:
    parts = rel.split("/")
    return any(pattern.fullmatch("/".join(parts[: i + 1])) for i in range(len(parts)))

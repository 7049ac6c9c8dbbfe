"""Render apps (plain YAML, Kustomize, Helm) from an exported revision into objects.

Everything is read from a directory produced by ``bot.gitops`` for an exact
SHA, confined to it, bounded by :class:`RenderLimits`, and cached by content.
"""

from __future__ import annotations

from bot.render.affected import affected_apps, glob_regex
from bot.render.cache import CacheStats, RenderCache
from bot.render.engine import RenderEngine, plan_render, render_app, render_apps, render_inputs
from bot.render.limits import RenderError, RenderLimits
from bot.render.manifests import load_manifests

__all__ = [
    "CacheStats",
    "RenderCache",
    "RenderEngine",
    "RenderError",
    "RenderLimits",
    "affected_apps",
    "glob_regex",
    "load_manifests",
    "plan_render",
    "render_app",
    "render_apps",
    "render_inputs",
]

"""Plain apps: every YAML/JSON manifest under the app directory."""

from __future__ import annotations

import time

from bot.models import K8sObject
from bot.render.limits import RenderError, RenderLimits
from bot.render.manifests import load_manifests
from bot.render.tree import ExportTree

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def plain_files(tree: ExportTree, directory: str) -> list[str]:
    """Manifest files under ``directory``, recursively, in sorted order."""
    return [
        rel for rel in tree.walk(directory, directory or ".") if rel.endswith(MANIFEST_SUFFIXES)
    ]


def render_plain(
    tree: ExportTree, directory: str, limits: RenderLimits, deadline: float
) -> list[K8sObject]:
    objects: list[K8sObject] = []
    for rel in plain_files(tree, directory):
        if time.monotonic() > deadline:
            raise RenderError(f"{directory}: render timed out after {limits.timeout_s:g}s")
        objects.extend(load_manifests(tree.read_bytes(rel, limits), rel, limits))
        if len(objects) > limits.max_objects:
            raise RenderError(
                f"{directory}: more than {limits.max_objects} objects (limit max_objects)"
            )
    return objects

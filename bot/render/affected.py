"""Which apps a change affects: their directory, their watch globs, and every file they read."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from bot.models import App
from bot.render.engine import render_inputs
from bot.render.globs import Glob, GlobError
from bot.render.limits import RenderError
from bot.render.tree import ExportTree

InputsOf = Callable[[App, Path], set[str]]


def affected_apps(
    apps: Iterable[App],
    changed_files: Iterable[str],
    base_root: Path | None,
    head_root: Path | None,
    *,
    inputs_of: InputsOf = render_inputs,
) -> set[str]:
    """Names of the apps whose render may differ between the base and head exports.

    An app is affected when a changed file is under its path, matches one of its
    ``watch`` globs, or is read by its render; when it exists on only one side; or
    when its inputs cannot be determined (fail closed).

    The inputs are read on the base side only. A file that only the head's render
    reads is reached through a chain of references (kustomization files, the
    chart, configured values files) that starts unchanged at the app; the first
    changed link of that chain is read by the base's render too, so the base side
    alone finds every affected app. Base exports are shared by most pull
    requests, so ``inputs_of`` can memoize them (see ``bot.preview``).
    """
    changed = set(changed_files)
    return {app.name for app in apps if _is_affected(app, changed, base_root, head_root, inputs_of)}


def _is_affected(
    app: App,
    changed: set[str],
    base_root: Path | None,
    head_root: Path | None,
    inputs_of: InputsOf,
) -> bool:
    if any(_under(path, app.path) for path in changed):
        return True
    try:
        patterns = [glob_regex(pattern) for pattern in app.watch]
    except GlobError:
        return True  # refused by config validation already; fail closed regardless
    if any(_watched(path, patterns) for path in changed):
        return True
    present = [_app_exists(app, root) for root in (base_root, head_root)]
    if None in present or present[0] != present[1]:
        return True
    if not present[0]:
        return False  # on neither side: nothing renders either way
    try:
        return bool(inputs_of(app, base_root) & changed)
    except RenderError:
        return True


def _app_exists(app: App, root: Path | None) -> bool | None:
    """Whether the app's directory exists in ``root``; None when its path is unsafe."""
    if root is None:
        return False
    try:
        tree = ExportTree(root)
        return tree.real(tree.join("", app.path, "path"), "path").is_dir() if app.path else True
    except RenderError:
        return None


def _under(path: str, directory: str) -> bool:
    return not directory or path == directory or path.startswith(directory.rstrip("/") + "/")


def _watched(path: str, patterns: list[Glob]) -> bool:
    """A pattern matches the file itself or any directory it is in (like .gitignore)."""
    return any(p.match_or_parent(path) for p in patterns)


def glob_regex(pattern: str) -> Glob:
    """Compile a repo glob (linear-time matcher, see :mod:`bot.render.globs`)."""
    return Glob(pattern)

"""Which apps a change affects: their directory, their watch globs, and every file they read."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from bot.models import App
from bot.render.engine import render_inputs
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
    patterns = [glob_regex(pattern) for pattern in app.watch]
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


def _watched(path: str, patterns: list[re.Pattern[str]]) -> bool:
    """A pattern matches the file itself or any directory it is in (like .gitignore)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(p.fullmatch(c) for p in patterns for c in candidates)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a repo glob: ``**`` spans directories, ``*`` and ``?`` stay within one."""
    pattern = pattern.strip("/")
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[" and pattern.find("]", i + 2) > 0:
            end = pattern.find("]", i + 2)
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile("".join(out))

"""Helm's ``--set`` / ``--set-string`` semantics for Argo CD ``helm.parameters``."""

from __future__ import annotations

import re
from typing import Any

from bot.render.limits import RenderError

_INDEX = re.compile(r"^(.*)\[(\d+)\]$")
_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")
_MAX_INDEX = 65536


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` unless escaped with a backslash (the escape is dropped)."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _typed(value: str, force_string: bool) -> Any:
    """Helm types ``--set`` values: true/false, null and integers; ``--set-string`` never."""
    if force_string:
        return value
    if value in ("true", "false"):
        return value == "true"
    if value == "null":
        return None
    if _INT.match(value):
        return int(value)
    return value


def _value(raw: str, force_string: bool) -> Any:
    if not force_string and raw.startswith("{") and raw.endswith("}"):
        inner = raw[1:-1]
        return [_typed(item, False) for item in _split(inner, ",")] if inner else []
    return _typed(raw, force_string)


def set_parameter(values: dict[str, Any], name: str, raw: str, *, force_string: bool) -> None:
    """Set ``name`` (``a.b[0].c``, dots escaped as ``\\.``) in ``values`` like ``--set``."""
    keys = _split(name, ".")
    if not name or any(not key for key in keys):
        raise RenderError(f"helm.parameters: {name!r} is not a valid parameter name")
    node: Any = values
    for position, key in enumerate(keys):
        last = position == len(keys) - 1
        match = _INDEX.match(key)
        if match is None:
            if last:
                node[key] = _value(raw, force_string)
            else:
                if not isinstance(node.get(key), dict):
                    node[key] = {}
                node = node[key]
            continue
        key, index = match.group(1), int(match.group(2))
        if index > _MAX_INDEX:
            raise RenderError(f"helm.parameters: {name!r}: list index {index} is too large")
        if not isinstance(node.get(key), list):
            node[key] = []
        items = node[key]
        items.extend([None] * (index + 1 - len(items)))
        if last:
            items[index] = _value(raw, force_string)
        else:
            if not isinstance(items[index], dict):
                items[index] = {}
            node = items[index]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: nested mappings merge, anything else in ``override`` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out

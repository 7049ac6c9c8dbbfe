"""Flux postBuild variable substitution (kustomize-controller's envsubst rules).

Only ``${name}`` forms are substituted (``$name`` is left alone, as Flux does), ``$${...}``
is an escape for a literal ``${...}``, an undefined variable without a default becomes the
empty string, and ``${name:=default}`` / ``${name:-default}`` supply one. A variable that
may come from a source Sluice cannot read (a Secret, a ConfigMap outside the repo) is left
as written and reported by name instead of being guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from bot.render.limits import RenderError

VAR_NAME = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
DISABLE_ANNOTATION = "kustomize.toolkit.fluxcd.io/substitute"
_TOKEN = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_EXPR = re.compile(r"^([_a-zA-Z][_a-zA-Z0-9]*)(.*)$", re.DOTALL)


@dataclass
class Substitution:
    variables: dict[str, str]
    # True when some variables may be defined where Sluice cannot look.
    partial: bool = False
    unresolved: set[str] = field(default_factory=set)

    def text(self, source: str, where: str) -> str:
        return _TOKEN.sub(lambda m: self._replace(m, where), source)

    def _replace(self, match: re.Match[str], where: str) -> str:
        if match.group(0) == "$${":
            return "${"
        expression = match.group(1)
        parsed = _EXPR.match(expression)
        if parsed is None:
            raise RenderError(f"{where}: postBuild: cannot substitute ${{{expression}}}")
        name, rest = parsed.groups()
        value = self.variables.get(name)
        if value is None and self.partial:
            self.unresolved.add(name)
            return match.group(0)
        return _apply(name, value, rest, where)


def _apply(name: str, value: str | None, rest: str, where: str) -> str:
    if not rest:
        return value or ""
    for operator in (":=", ":-"):
        if rest.startswith(operator):
            return value if value else rest[len(operator) :]
    for operator in ("=", "-"):
        if rest.startswith(operator):
            return value if value is not None else rest[1:]
    text = value or ""
    if rest in ("^^", ",,", "^", ","):
        if rest == "^^":
            return text.upper()
        if rest == ",,":
            return text.lower()
        return (text[:1].upper() if rest == "^" else text[:1].lower()) + text[1:]
    slice_match = re.fullmatch(r":(-?\d+)(?::(\d+))?", rest)
    if slice_match:
        start = int(slice_match.group(1))
        length = slice_match.group(2)
        end = None if length is None else (start if start >= 0 else len(text) + start) + int(length)
        return text[start:end]
    replace = re.fullmatch(r"(//?)([^/]*)/(.*)", rest, re.DOTALL)
    if replace:
        count = -1 if replace.group(1) == "//" else 1
        return text.replace(replace.group(2), replace.group(3), count) if replace.group(2) else text
    raise RenderError(f"{where}: postBuild: unsupported substitution ${{{name}{rest}}}")


def substitute_objects(
    objects: list[dict[str, Any]], substitution: Substitution, source: str
) -> list[dict[str, Any]]:
    """Every object through envsubst on its YAML text, unless it opts out by annotation."""
    out = []
    for obj in objects:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if annotations.get(DISABLE_ANNOTATION) == "disabled":
            out.append(obj)
            continue
        where = f"{source}: {obj.get('kind')} {(obj.get('metadata') or {}).get('name')}"
        text = yaml.dump(obj, Dumper=yaml.CSafeDumper, sort_keys=False, width=1 << 30)
        replaced = substitution.text(text, where)
        if replaced == text:
            out.append(obj)
            continue
        try:
            loaded = yaml.load(replaced, Loader=yaml.CSafeLoader)
        except yaml.YAMLError:
            raise RenderError(f"{where}: the object is not valid YAML after substitution") from None
        if not isinstance(loaded, dict):
            raise RenderError(f"{where}: the object is not a mapping after substitution")
        out.append(loaded)
    return out

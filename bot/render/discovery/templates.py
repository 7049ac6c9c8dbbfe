"""ApplicationSet template parameters: fasttemplate ``{{path.basename}}`` and Go templates.

fasttemplate (the default): ``{{ key }}`` is looked up in the flat parameters, an unknown
key is left as written. Go templates (``goTemplate: true``): a subset of text/template with
the Sprig functions ApplicationSets commonly use; anything else is a clear error rather
than a silently different render.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from bot.render.limits import RenderError

_FAST = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|`[^`]*`|\||\(|\)|-?\d+|\$?\.[\w.\[\]-]*|[A-Za-z_]\w*)')
NO_VALUE = "<no value>"


def render_fast(text: str, params: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1).strip()
        return params[key] if key in params else match.group(0)

    return _FAST.sub(replace, text)


def _normalize(value: str) -> str:
    return re.sub(r"[^a-z0-9.-]", "-", value.lower())


def _str(value: Any) -> str:
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return "map[…]" if isinstance(value, dict) else " ".join(_str(v) for v in value)
    return str(value)


def _index(collection: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            collection = collection[key]
        except (KeyError, IndexError, TypeError):
            raise RenderError(f"template: index {key!r} out of range") from None
    return collection


_FUNCS: dict[str, Callable[..., Any]] = {
    "lower": lambda s: _str(s).lower(),
    "upper": lambda s: _str(s).upper(),
    "title": lambda s: _str(s).title(),
    "trim": lambda s: _str(s).strip(),
    "trimPrefix": lambda p, s: _str(s).removeprefix(p),
    "trimSuffix": lambda p, s: _str(s).removesuffix(p),
    "replace": lambda old, new, s: _str(s).replace(old, new),
    "default": lambda d, v=None: v if v not in (None, "", [], {}, False, 0) else d,
    "quote": lambda s: json.dumps(_str(s)),
    "squote": lambda s: f"'{_str(s)}'",
    "join": lambda sep, items: sep.join(_str(i) for i in items),
    "index": _index,
    "normalize": lambda s: _normalize(_str(s)),
    "toString": _str,
    "base": lambda s: _str(s).rstrip("/").rsplit("/", 1)[-1],
    "trunc": lambda n, s: _str(s)[:n] if n >= 0 else _str(s)[n:],
}


class GoTemplate:
    """Evaluate one template string against nested parameters."""

    def __init__(self, params: dict[str, Any], missing_error: bool = False) -> None:
        self.params = params
        self.missing_error = missing_error

    def render(self, text: str) -> str:
        out: list[str] = []
        position = 0
        for match in _ACTION.finditer(text):
            before = text[position : match.start()]
            out.append(before.rstrip() if match.group(1) else before)
            out.append(_str(self._pipeline(match.group(2).strip(), text)))
            position = match.end()
            if match.group(3):
                rest = text[position:]
                position += len(rest) - len(rest.lstrip())
        out.append(text[position:])
        return "".join(out)

    def _pipeline(self, action: str, text: str) -> Any:
        if not action or action.startswith("/*"):
            return ""
        tokens = _TOKEN.findall(action)
        if "".join(tokens).replace(" ", "") != action.replace(" ", ""):
            raise RenderError(f"template: cannot parse {{{{{action}}}}}")
        word = tokens[0] if tokens else ""
        if word in ("if", "range", "with", "end", "else", "define", "template", "block"):
            raise RenderError(f"template: {word!r} actions are not supported: {{{{{action}}}}}")
        value: Any = None
        first = True
        for command in _split_pipes(tokens):
            args = [self._arg(token) for token in command[1:]]
            head = command[0]
            if not first:
                args.append(value)
            if head in _FUNCS:
                try:
                    value = _FUNCS[head](*args)
                except TypeError:
                    raise RenderError(f"template: wrong arguments to {head}") from None
            elif len(command) == 1 and first:
                value = self._arg(head)
            else:
                raise RenderError(f"template: unsupported function {head!r} in {text!r}")
            first = False
        return value

    def _arg(self, token: str) -> Any:
        if token.startswith(('"', "`")):
            return json.loads(token) if token.startswith('"') else token[1:-1]
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        if token.startswith(("$.", ".")) or token in (".", "$"):
            return self._lookup(token.lstrip("$"))
        if token in ("true", "false"):
            return token == "true"
        raise RenderError(f"template: unsupported word {token!r}")

    def _lookup(self, path: str) -> Any:
        node: Any = self.params
        for key in [k for k in path.split(".") if k]:
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif self.missing_error:
                raise RenderError(f"template: map has no entry for key {key!r}")
            else:
                return None
        return node


def _split_pipes(tokens: list[str]) -> list[list[str]]:
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token == "|":
            commands.append([])
        else:
            commands[-1].append(token)
    if any(not command for command in commands):
        raise RenderError("template: empty command in pipeline")
    return commands


def render_value(value: Any, render: Callable[[str], str]) -> Any:
    """Apply ``render`` to every string (keys too) in a YAML value."""
    if isinstance(value, str):
        return render(value)
    if isinstance(value, list):
        return [render_value(item, render) for item in value]
    if isinstance(value, dict):
        return {render(str(k)): render_value(v, render) for k, v in value.items()}
    return value

"""Argo CD ``ApplicationSet``: expand the list, git directory and git file generators
(and ``matrix`` / ``merge`` of them) into Applications, as the controller would.

Parameters follow the Git generator docs: ``path``, ``path.basename``,
``path.basenameNormalized``, ``path[n]`` (and ``path.filename`` for files) with
fasttemplate; ``.path.path``, ``.path.basename``, ``.path.segments`` … with Go templates.
Every file a generator reads is returned, so affected-app detection sees it.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from bot.render.affected import glob_regex
from bot.render.discovery.context import Context
from bot.render.discovery.helmset import deep_merge
from bot.render.discovery.templates import GoTemplate, render_fast, render_value
from bot.render.limits import RenderError, RenderLimits
from bot.render.manifests import load_yaml_document

_MAX_PARAMS = 5000
Params = dict[str, Any]


# Where a parameter set came from (git files generator files): kept beside the parameters,
# out of the templates' reach, so each generated app watches only its own files.
_SOURCE = "\x00sluice-files"


@dataclass
class Expansion:
    # (Application manifest, the generator files its parameters came from)
    applications: list[tuple[dict[str, Any], tuple[str, ...]]] = field(default_factory=list)


class _Generators:
    def __init__(self, ctx: Context, go: bool, where: str, limits: RenderLimits) -> None:
        self.ctx, self.go, self.where, self.limits = ctx, go, where, limits
        self._dirs: list[str] | None = None
        self._all_files: list[str] | None = None

    def run(self, generator: dict[str, Any], inherited: Params | None = None) -> list[Params]:
        if not isinstance(generator, dict) or len(set(generator) - {"selector", "template"}) != 1:
            raise RenderError(f"{self.where}: each generator must have exactly one kind")
        if generator.get("selector"):
            raise RenderError(f"{self.where}: generator selectors are not supported by Sluice")
        kind = next(k for k in generator if k not in ("selector", "template"))
        spec = generator[kind]
        if inherited:
            spec = render_value(spec, self._renderer(inherited))
        if kind == "list":
            elements = spec.get("elements") or []
            return [self._element(e) for e in elements]
        if kind == "git":
            return self._git(spec)
        if kind == "matrix":
            return self._matrix(spec.get("generators") or [])
        if kind == "merge":
            return self._merge(spec.get("generators") or [], spec.get("mergeKeys") or [])
        raise RenderError(
            f"{self.where}: the {kind} generator needs the cluster or an API; not rendered"
        )

    def _renderer(self, params: Params):
        if self.go:
            return GoTemplate(params).render
        return lambda text: render_fast(text, params)

    def _element(self, element: Any) -> Params:
        if not isinstance(element, dict):
            raise RenderError(f"{self.where}: list elements must be mappings")
        return element if self.go else _flatten(element)

    def _matrix(self, generators: list[Any]) -> list[Params]:
        if len(generators) != 2:
            raise RenderError(f"{self.where}: a matrix generator needs exactly two generators")
        out = []
        for left in self.run(generators[0]):
            for right in self.run(generators[1], left):
                combined = deep_merge(left, right) if self.go else {**left, **right}
                out.append(_with_sources(combined, left, right))
                if len(out) > _MAX_PARAMS:
                    raise RenderError(f"{self.where}: more than {_MAX_PARAMS} parameter sets")
        return out

    def _merge(self, generators: list[Any], keys: list[str]) -> list[Params]:
        if not generators or not keys:
            raise RenderError(f"{self.where}: a merge generator needs generators and mergeKeys")
        base = [dict(p) for p in self.run(generators[0])]
        for other in generators[1:]:
            for params in self.run(other):
                for target in base:
                    if all(_get(target, k) == _get(params, k) for k in keys):
                        merged = deep_merge(target, params) if self.go else {**target, **params}
                        target.update(_with_sources(merged, target, params))
        return base

    def _git(self, spec: dict[str, Any]) -> list[Params]:
        url = str(spec.get("repoURL", ""))
        entries = spec.get("directories") or spec.get("files") or []
        if not self.ctx.is_local(url, "."):
            raise RenderError(f"{self.where}: not rendered: git generator on external source {url}")
        if spec.get("directories"):
            return self._directories(entries)
        return self._config_files(entries)

    def _directories(self, entries: list[dict[str, Any]]) -> list[Params]:
        if self._dirs is None:
            self._dirs = _directories(self.ctx)
        include = [glob_regex(str(e["path"])) for e in entries if not e.get("exclude")]
        exclude = [glob_regex(str(e["path"])) for e in entries if e.get("exclude")]
        found = [
            d
            for d in self._dirs
            if any(p.fullmatch(d) for p in include) and not any(p.fullmatch(d) for p in exclude)
        ]
        return [self._path_params(d, None, {}) for d in found]

    def _config_files(self, entries: list[dict[str, Any]]) -> list[Params]:
        if self._all_files is None:
            self._all_files = self.ctx.tree.walk("", ".")
        out: list[Params] = []
        for entry in entries:
            pattern = glob_regex(str(entry.get("path", "")))
            for rel in (f for f in self._all_files if pattern.fullmatch(f)):
                data = load_yaml_document(
                    self.ctx.tree.read_bytes(rel, self.limits), rel, self.limits
                )
                for item in data if isinstance(data, list) else [data]:
                    if not isinstance(item, dict):
                        raise RenderError(
                            f"{rel}: a git files generator file must hold a mapping or a list of them"
                        )
                    out.append(self._path_params(posixpath.dirname(rel), rel, item))
        return out

    def _path_params(self, directory: str, file: str | None, content: Params) -> Params:
        segments = directory.split("/") if directory else []
        basename = segments[-1] if segments else ""
        if self.go:
            path: Params = {
                "path": directory,
                "basename": basename,
                "basenameNormalized": _normalized(basename),
                "segments": segments,
            }
            if file:
                name = posixpath.basename(file)
                path |= {"filename": name, "filenameNormalized": _normalized(name)}
            return {**content, "path": path, **({_SOURCE: (file,)} if file else {})}
        params = _flatten(content)
        params |= {
            "path": directory,
            "path.basename": basename,
            "path.basenameNormalized": _normalized(basename),
        }
        params |= {f"path[{i}]": s for i, s in enumerate(segments)}
        if file:
            name = posixpath.basename(file)
            params |= {"path.filename": name, "path.filenameNormalized": _normalized(name)}
            params[_SOURCE] = (file,)  # type: ignore[assignment]
        return params


def expand_appset(obj: dict[str, Any], file: str, ctx: Context, limits: RenderLimits) -> Expansion:
    """The Applications an ApplicationSet generates; raises RenderError for what cannot be."""
    name = (obj.get("metadata") or {}).get("name")
    spec = obj.get("spec") or {}
    where = f"{file}: ApplicationSet {name}"
    template = spec.get("template")
    if not isinstance(template, dict):
        raise RenderError(f"{where}: spec.template is required")
    if spec.get("templatePatch"):
        raise RenderError(f"{where}: templatePatch is not supported by Sluice")
    go = bool(spec.get("goTemplate", False))
    missing_error = "missingkey=error" in (spec.get("goTemplateOptions") or [])
    generators = _Generators(ctx, go, where, limits)
    expansion = Expansion()
    for generator in spec.get("generators") or []:
        if isinstance(generator, dict) and generator.get("template"):
            raise RenderError(f"{where}: generator-level templates are not supported by Sluice")
        for generated in generators.run(generator):
            params = dict(generated)
            sources = tuple(sorted(set(params.pop(_SOURCE, ()))))
            render = (
                GoTemplate(params, missing_error).render
                if go
                else (lambda t, p=params: render_fast(t, p))
            )
            app = render_value(template, render)
            app = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **app}
            expansion.applications.append((app, sources))
    return expansion


def _with_sources(combined: Params, *parts: Params) -> Params:
    sources = tuple(f for part in parts for f in part.get(_SOURCE, ()))
    if sources:
        combined[_SOURCE] = sources
    return combined


def _directories(ctx: Context) -> list[str]:
    dirs = set()
    for rel in ctx.tree.walk("", "."):
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(d for d in dirs if not any(p.startswith(".") for p in d.split("/")))


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        out[prefix] = json.dumps(value)
    elif isinstance(value, bool):
        out[prefix] = "true" if value else "false"
    else:
        out[prefix] = "" if value is None else str(value)
    return out


def _get(params: Params, key: str) -> Any:
    if key in params:
        return params[key]
    node: Any = params
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _normalized(value: str) -> str:
    return re.sub(r"[^a-z0-9.-]", "-", value.lower())

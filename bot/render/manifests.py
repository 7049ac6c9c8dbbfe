"""Parse Kubernetes manifests from YAML/JSON text, safely.

Multi-document streams, ``kind: List`` unpacking, a bound on alias expansion
(billion laughs) and error messages that name file, line and column but never
quote the content (the offending line could belong to a Secret).
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from bot.models import K8sObject
from bot.render.limits import RenderError, RenderLimits

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class _ManifestLoader(yaml.CSafeLoader):
    """CSafeLoader that keeps timestamps and binaries as strings, as Kubernetes does."""


_ManifestLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.CSafeLoader.construct_yaml_str)
_ManifestLoader.add_constructor("tag:yaml.org,2002:binary", yaml.CSafeLoader.construct_yaml_str)


def load_manifests(text: bytes | str, source: str, limits: RenderLimits) -> list[K8sObject]:
    """Every Kubernetes object in ``text``, in document order.

    Empty documents are skipped and ``List`` objects are unpacked. Raises
    :class:`RenderError` naming ``source`` for malformed YAML, alias bombs,
    oversized input, non-mapping documents and objects without
    ``apiVersion``, ``kind`` or ``metadata.name``.
    """
    _check_size(text, source, limits)
    if source.endswith(".json"):
        return _load_json(text, source, limits)
    objects: list[K8sObject] = []
    budget = _NodeBudget(limits.max_yaml_nodes, source, text)
    loader = _ManifestLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            budget.charge(node)
            _check_depth(node, limits.max_yaml_depth, source)
            data = loader.construct_document(node)
            objects.extend(_objects_in(data, source, node.start_mark.line + 1))
            if len(objects) > limits.max_objects:
                raise RenderError(
                    f"{source}: more than {limits.max_objects} objects (limit max_objects)"
                )
    except yaml.YAMLError as exc:
        raise RenderError(describe_yaml_error(exc, source)) from None
    finally:
        loader.dispose()
    return objects


def _load_json(text: bytes | str, source: str, limits: RenderLimits) -> list[K8sObject]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RenderError(f"{source}: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise RenderError(f"{source}: not valid UTF-8 text") from None
    except RecursionError:
        raise RenderError(f"{source}: JSON is nested too deeply") from None
    if _depth(data) > limits.max_yaml_depth:
        raise RenderError(
            f"{source}: nested more than {limits.max_yaml_depth} levels deep (max_yaml_depth)"
        )
    objects = _objects_in(data, source, 1)
    if len(objects) > limits.max_objects:
        raise RenderError(f"{source}: more than {limits.max_objects} objects (limit max_objects)")
    return objects


def load_yaml_document(text: bytes | str, source: str, limits: RenderLimits) -> Any:
    """One YAML document (e.g. a Helm values file or a kustomization), with the same guards."""
    _check_size(text, source, limits)
    loader = _ManifestLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _NodeBudget(limits.max_yaml_nodes, source, text).charge(node)
        _check_depth(node, limits.max_yaml_depth, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise RenderError(describe_yaml_error(exc, source)) from None
    finally:
        loader.dispose()


def check_yaml_stream(text: bytes | str, source: str, limits: RenderLimits) -> None:
    """Refuse malformed YAML or an alias bomb in a stream whose shape is not checked."""
    _check_size(text, source, limits)
    budget = _NodeBudget(limits.max_yaml_nodes, source, text)
    loader = _ManifestLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            budget.charge(node)
            _check_depth(node, limits.max_yaml_depth, source)
    except yaml.YAMLError as exc:
        raise RenderError(describe_yaml_error(exc, source)) from None
    finally:
        loader.dispose()


def describe_yaml_error(exc: yaml.YAMLError, source: str) -> str:
    """``source: line L, column C: problem`` with any quoted content removed."""
    if isinstance(exc, yaml.reader.ReaderError):
        return f"{source}: byte {exc.position}: not valid {exc.encoding} text"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f": line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or "invalid YAML"
    return f"{source}{where}: {redact_quoted(problem)}"


def _check_size(text: bytes | str, source: str, limits: RenderLimits) -> None:
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_file_bytes:
        raise RenderError(
            f"{source}: file is {size} bytes, over the {limits.max_file_bytes}-byte limit"
        )


def redact_quoted(message: str) -> str:
    """Replace quoted fragments (which may be file content) with an ellipsis."""
    return _QUOTED.sub("'…'", message)


def _objects_in(data: Any, source: str, line: int) -> list[K8sObject]:
    if data is None:
        return []
    where = f"{source}: document at line {line}"
    if not isinstance(data, dict):
        raise RenderError(f"{where}: expected a mapping (a Kubernetes object), got {_kind(data)}")
    kind = data.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(data.get("items"), list):
        items = []
        for index, item in enumerate(data["items"]):
            if not isinstance(item, dict):
                raise RenderError(f"{where}: items[{index}]: expected a mapping, got {_kind(item)}")
            _check_object(item, f"{where}: items[{index}]")
            items.append(item)
        return items
    _check_object(data, where)
    return [data]


def _check_object(obj: dict[str, Any], where: str) -> None:
    for field_name in ("apiVersion", "kind"):
        if not isinstance(obj.get(field_name), str) or not obj[field_name]:
            raise RenderError(f"{where}: object has no {field_name}")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise RenderError(f"{where}: {obj['kind']} has no metadata.name")
    if not metadata["name"]:
        raise RenderError(f"{where}: {obj['kind']} has an empty metadata.name")


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string"}.get(type(value), type(value).__name__)


class _NodeBudget:
    """Counts the nodes a YAML stream expands to when its aliases are followed.

    The composed graph shares aliased nodes, so a billion-laughs document is
    tiny in memory; whoever later walks the constructed objects (diff, JSON,
    policy) pays the expanded size. Memoising per node keeps this linear in
    the size of the graph, and an alias that refers to its own ancestor
    (a cycle) is refused outright.
    """

    def __init__(self, limit: int, source: str, text: bytes | str) -> None:
        # Without a '*' there is no alias, and the graph is a tree the parser already bounds.
        self.aliases_possible = (b"*" if isinstance(text, bytes) else "*") in text
        self.limit = limit
        self.source = source
        self.used = 0

    def charge(self, root: yaml.Node) -> None:
        if not self.aliases_possible:
            return
        sizes: dict[int, int] = {}
        in_progress: set[int] = set()
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            key = id(node)
            if children_done:
                in_progress.discard(key)
                sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
                if sizes[key] + self.used > self.limit:
                    self._refuse(node)
                continue
            if key in sizes:
                continue
            if key in in_progress:
                raise RenderError(
                    f"{self.source}: line {node.start_mark.line + 1}: recursive YAML alias"
                )
            in_progress.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
        self.used += sizes[id(root)]

    def _refuse(self, node: yaml.Node) -> None:
        raise RenderError(
            f"{self.source}: line {node.start_mark.line + 1}: YAML aliases expand to more than "
            f"{self.limit} nodes (alias bomb?)"
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_depth(root: yaml.Node, limit: int, source: str) -> None:
    """Refuse a document nested deeper than ``limit``: everything after the parser (diff,
    normalisation, policy input) walks objects recursively and would overflow the stack.
    Runs after the alias budget, which refuses cycles and bounds the walk."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise RenderError(
                f"{source}: line {node.start_mark.line + 1}: nested more than {limit} levels "
                "deep (max_yaml_depth)"
            )
        stack.extend((child, depth + 1) for child in _children(node))


def _depth(data: Any) -> int:
    deepest = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(value, dict):
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)
    return deepest

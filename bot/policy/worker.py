"""The child process that hosts one embedded Rego engine.

Run as ``python -I worker.py``; it speaks JSON lines over its stdin/stdout.  It is
deliberately self-contained (stdlib plus the engine wheel) so that a Rust panic, a
hang or a segfault inside an engine takes down only this process: the parent
(:mod:`bot.policy.process`) kills and restarts it.

Requests and replies (one JSON object per line):

``{"op": "load", "backend": "regorus"|"regopy", "sources": {path: text}}``
    → ``{"ok": true}`` or ``{"ok": false, "error": "..."}``
``{"op": "gate", "rule": "data.pkg.rule", "app": {...}, "objects": [{...}, ...]}``
    → ``{"ok": true, "results": [value, ...]}``: the rule evaluated once per object,
    with that object as ``input`` and ``data.sluice`` = ``{"app", "objects"}``
    (set once per request), or ``{"ok": false, "error": "...", "index": i}``
``{"op": "query", "query": "data.pkg.test_x"}``
    → ``{"ok": true, "result": value-or-null}`` (no input, no data)

Speed notes (the gate runs for every object of every app): regorus takes the
request's parsed Python values directly (``set_input``/``add_data``, about half the
cost of handing it JSON text), the rule is read with ``eval_rule`` (cheaper than a
query), and the per-object results are spliced into the reply as JSON text.  Most
objects share a handful of distinct results (usually "nothing to report"), so each
distinct pretty-printed text is compacted once and remembered.

regorus also ships a bytecode VM (``regorus.Program``/``Rvm``, about five times
faster), but in this version it binds an undefined value as the string
"<undefined>" instead of failing the rule body (``y := input.missing`` succeeds),
which would turn policies inside out; it is not used.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any


class EngineError(Exception):
    """An error reported by the Rego engine (compile or evaluation)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class RegorusEngine:
    # Distinct results kept in compact form; objects that pass share one result text.
    COMPACT_CACHE_SIZE = 256

    def __init__(self, sources: dict[str, str]) -> None:
        import regorus

        self._engine = regorus.Engine()
        self._compact: dict[str, str] = {}
        for path, text in sources.items():
            try:
                self._engine.add_policy(path, text)
            except RuntimeError as exc:
                raise EngineError(_clean(str(exc))) from None

    def gate(self, rule: str, data: dict[str, Any], objects: list[Any]) -> list[str]:
        """JSON text of ``rule`` for each object (``null`` where undefined)."""
        engine = self._engine
        engine.clear_data()
        engine.add_data(data)
        results = []
        for index, obj in enumerate(objects):
            engine.set_input(obj)
            try:
                text = engine.eval_rule_as_json(rule)
            except RuntimeError as exc:
                raise EngineError(_clean(str(exc)), index) from None
            results.append(self._compacted(text))
        return results

    def _compacted(self, text: str) -> str:
        """eval_rule_as_json's pretty-printed text as compact JSON (cheaper to parse)."""
        compact = self._compact.get(text)
        if compact is None:
            # The engine spells an undefined rule as this string.
            value = None if text == '"<undefined>"' else json.loads(text)
            compact = json.dumps(value, separators=(",", ":"))
            if len(self._compact) < self.COMPACT_CACHE_SIZE:
                self._compact[text] = compact
        return compact

    def query(self, query: str) -> Any:
        self._engine.clear_data()
        try:
            out = json.loads(self._engine.eval_query_as_json(query))
        except RuntimeError as exc:
            raise EngineError(_clean(str(exc))) from None
        rows = out.get("result") or []
        if not rows:
            return None
        return rows[0]["expressions"][0]["value"]


class RegopyEngine:
    def __init__(self, sources: dict[str, str]) -> None:
        import regopy

        self._regopy = regopy
        self._sources = sources
        # Compile once without app data so that syntax errors surface at load time.
        self._query(self._interpreter(None), "true")

    def _interpreter(self, data: Any) -> Any:
        try:
            return self._new_interpreter(data)
        except self._regopy.RegoError as exc:
            raise EngineError(_regopy_error(str(exc), self._sources)) from None

    def _new_interpreter(self, data: Any) -> Any:
        rego = self._regopy.Interpreter()
        # rego-cpp turns builtin errors into "undefined" by default, which would let a
        # broken rule pass silently.  Fail closed instead.
        rego.strict_built_in_errors = True
        for path, text in self._sources.items():
            rego.add_module(path, text)
        if data:
            rego.add_data_json(json.dumps(data))
        return rego

    def gate(self, rule: str, data: dict[str, Any], objects: list[Any]) -> list[str]:
        # rego-cpp cannot replace data once added and recompiles everything on every
        # plain query, so build one bundle per request (one app) and run it per object.
        rego = self._interpreter(data)
        try:
            bundle = rego.build(f"sluice_result__ = {rule}", [])
        except self._regopy.RegoError as exc:
            raise EngineError(_regopy_error(str(exc), self._sources)) from None
        if not bundle.ok():
            raise EngineError("rego-cpp could not compile the policies")
        results = []
        for index, obj in enumerate(objects):
            rego.set_input_term(json.dumps(obj))
            try:
                value = self._run(rego, bundle)
            except EngineError as exc:
                exc.index = index
                raise
            results.append(json.dumps(value, separators=(",", ":")))
        return results

    def query(self, query: str) -> Any:
        # Plain queries (policy unit tests): rego-cpp's bundle compiler aborts on
        # some `with` forms its interpreter handles.
        return self._query(self._interpreter(None), query)

    def _query(self, rego: Any, query: str) -> Any:
        try:
            output = rego.query(query)
        except self._regopy.RegoError as exc:
            raise EngineError(_regopy_error(str(exc), self._sources)) from None
        if not output.ok():
            raise EngineError(_regopy_error(str(output), self._sources))
        if not output.results or not output.results[0].expressions:
            return None
        return output.results[0].expressions[0]

    def _run(self, rego: Any, bundle: Any) -> Any:
        try:
            output = rego.query_bundle(bundle)
        except self._regopy.RegoError as exc:
            raise EngineError(_regopy_error(str(exc), self._sources)) from None
        if not output.ok():
            raise EngineError(_regopy_error(str(output), self._sources))
        if not output.results:
            return None
        return output.results[0].bindings.get("sluice_result__")


BACKENDS = {"regorus": RegorusEngine, "regopy": RegopyEngine}

_BACKTRACE = re.compile(r"\n\s*Stack backtrace:.*", re.DOTALL)
_REGOPY_ERROR = re.compile(r"\(error \d+:([^|\n]*)\|(\d+)\|\d+\s*\(errormsg \d+:([^)]*)\)")


def _clean(message: str) -> str:
    return _BACKTRACE.sub("", message).strip()


def _regopy_error(message: str, sources: dict[str, str]) -> str:
    """Turn rego-cpp's S-expression error list into ``file:line: message`` lines."""
    found = []
    for path, offset, text in _REGOPY_ERROR.findall(message):
        source = sources.get(path)
        if source is not None:
            line = source.count("\n", 0, int(offset)) + 1
            found.append(f"{path}:{line}: {text.strip()}")
        else:
            found.append(f"{path or '<query>'}: {text.strip()}")
    return "\n".join(dict.fromkeys(found)) or _clean(message)


def _describe(exc: BaseException) -> str:
    return _clean(str(exc)) or type(exc).__name__


class Server:
    def __init__(self, out: Any) -> None:
        self._out = out
        self._backend: str | None = None
        self._sources: dict[str, str] = {}
        self._engine: Any = None

    def reply(self, message: dict[str, Any] | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message, separators=(",", ":")).encode()
        self._out.write(message + b"\n")
        self._out.flush()

    def handle(self, request: dict[str, Any]) -> dict[str, Any] | bytes:
        op = request.get("op")
        if op == "load":
            self._backend = request["backend"]
            self._sources = request["sources"]
            self._engine = None
            return self._ensure_engine() or {"ok": True}
        if op == "gate":
            objects = request["objects"]
            data = {"sluice": {"app": request["app"], "objects": objects}}
            failure, texts = self._run(lambda engine: engine.gate(request["rule"], data, objects))
            # The engine's JSON texts are spliced in as they are.
            return failure or ('{"ok":true,"results":[' + ",".join(texts) + "]}").encode()
        if op == "query":
            failure, value = self._run(lambda engine: engine.query(request["query"]))
            return failure or {"ok": True, "result": value}
        return {"ok": False, "error": f"unknown op {op!r}", "index": None}

    def _run(self, call: Callable[[Any], Any]) -> tuple[dict[str, Any] | None, Any]:
        """``(None, call(engine))``, or ``(error reply, None)`` for any engine failure."""
        failure = self._ensure_engine()
        if failure:
            return failure, None
        try:
            return None, call(self._engine)
        except EngineError as exc:
            return {"ok": False, "error": str(exc), "index": exc.index}, None
        except Exception as exc:  # noqa: BLE001 - any engine failure is a reported error
            return {"ok": False, "error": _describe(exc), "index": None}, None
        except BaseException as exc:  # noqa: BLE001 - Rust panics derive from BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            # A panic may leave the engine half-updated: compile afresh next time.
            self._engine = None
            return {"ok": False, "error": f"engine panic: {_describe(exc)}", "index": None}, None

    def _ensure_engine(self) -> dict[str, Any] | None:
        if self._engine is not None:
            return None
        if self._backend not in BACKENDS:
            return {"ok": False, "error": f"unknown backend {self._backend!r}", "index": None}
        try:
            self._engine = BACKENDS[self._backend](self._sources)
        except EngineError as exc:
            return {"ok": False, "error": str(exc), "index": None}
        except Exception as exc:  # noqa: BLE001 - any engine failure is a reported error
            return {"ok": False, "error": _describe(exc), "index": None}
        except BaseException as exc:  # noqa: BLE001 - Rust panics derive from BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            return {"ok": False, "error": f"engine panic: {_describe(exc)}", "index": None}
        return None


def main() -> None:
    # Native engines may print to fd 1; keep the protocol on a private copy of it.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    server = Server(out)
    for line in sys.stdin.buffer:
        if line.strip():
            server.reply(server.handle(json.loads(line)))


if __name__ == "__main__":
    main()

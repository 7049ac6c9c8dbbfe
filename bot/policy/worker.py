"""The child process that hosts one embedded Rego engine.

Run as ``python -I worker.py``; it speaks JSON lines over its stdin/stdout.  It is
deliberately self-contained (stdlib plus the engine wheel) so that a Rust panic, a
hang or a segfault inside an engine takes down only this process: the parent
(:mod:`bot.policy.process`) kills and restarts it.

Requests and replies (one JSON object per line):

``{"op": "load", "backend": "regorus"|"regopy", "sources": {path: text}}``
    → ``{"ok": true}`` or ``{"ok": false, "error": "..."}``
``{"op": "eval", "query": "data.main", "data": {...}, "inputs": [{...}, ...] | null}``
    → ``{"ok": true, "results": [value-or-null, ...]}`` (one per input; one result
    when ``inputs`` is null, evaluated without input) or
    ``{"ok": false, "error": "...", "index": i}``
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any


class EngineError(Exception):
    """An error reported by the Rego engine (compile or evaluation)."""


class RegorusEngine:
    def __init__(self, sources: dict[str, str]) -> None:
        import regorus

        self._engine = regorus.Engine()
        for path, text in sources.items():
            try:
                self._engine.add_policy(path, text)
            except RuntimeError as exc:
                raise EngineError(_clean(str(exc))) from None

    def evaluate(self, query: str, data: Any, inputs: list[Any] | None) -> list[Any]:
        engine = self._engine
        engine.clear_data()
        if data:
            engine.add_data_json(json.dumps(data))
        if inputs is None:
            return [self._query(query)]
        results = []
        for index, value in enumerate(inputs):
            engine.set_input_json(json.dumps(value))
            try:
                results.append(self._query(query))
            except EngineError as exc:
                exc.index = index  # type: ignore[attr-defined]
                raise
        return results

    def _query(self, query: str) -> Any:
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
        return self._guarded(self._new_interpreter, data)

    def _guarded(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
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

    def _build(self, query: str, data: Any) -> tuple[Any, Any]:
        try:
            rego = self._interpreter(data)
            bundle = rego.build(f"sluice_result__ = {query}", [])
        except self._regopy.RegoError as exc:
            raise EngineError(_regopy_error(str(exc), self._sources)) from None
        if not bundle.ok():
            raise EngineError("rego-cpp could not compile the policies")
        return rego, bundle

    def evaluate(self, query: str, data: Any, inputs: list[Any] | None) -> list[Any]:
        # rego-cpp recompiles everything (including data) on every plain query, so
        # build a bundle once per request and run it per input.
        if inputs is None:
            # Plain queries (policy unit tests): rego-cpp's bundle compiler aborts on
            # some `with` forms its interpreter handles.
            return [self._query(self._interpreter(data), query)]
        rego, bundle = self._build(query, data)
        results = []
        for index, value in enumerate(inputs):
            rego.set_input_term(json.dumps(value))
            try:
                results.append(self._run(rego, bundle))
            except EngineError as exc:
                exc.index = index  # type: ignore[attr-defined]
                raise
        return results

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
    text = _clean(str(exc)) or type(exc).__name__
    return text


class Server:
    def __init__(self, out: Any) -> None:
        self._out = out
        self._backend: str | None = None
        self._sources: dict[str, str] = {}
        self._engine: Any = None

    def reply(self, message: dict[str, Any]) -> None:
        self._out.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self._out.flush()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "load":
            self._backend = request["backend"]
            self._sources = request["sources"]
            self._engine = None
            return self._ensure_engine() or {"ok": True}
        if op == "eval":
            failure = self._ensure_engine()
            if failure:
                return failure
            try:
                results = self._engine.evaluate(
                    request["query"], request.get("data"), request.get("inputs")
                )
            except EngineError as exc:
                return {"ok": False, "error": str(exc), "index": getattr(exc, "index", None)}
            except Exception as exc:  # noqa: BLE001 - any engine failure is a reported error
                return {"ok": False, "error": _describe(exc), "index": None}
            except BaseException as exc:  # noqa: BLE001 - Rust panics derive from BaseException
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                # A panic may leave the engine half-updated: compile afresh next time.
                self._engine = None
                return {"ok": False, "error": f"engine panic: {_describe(exc)}", "index": None}
            return {"ok": True, "results": results}
        return {"ok": False, "error": f"unknown op {op!r}", "index": None}

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

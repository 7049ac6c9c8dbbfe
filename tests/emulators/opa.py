"""An emulator of the OPA REST API (the parts opa-python-client uses).

Real HTTP on 127.0.0.1 (threaded, TCP_NODELAY).  Rego is evaluated with regorus, one
fresh engine per request because regorus engines cannot be shared across threads.
Fault injection: ``latency_s``, ``fail_next(n, status)``, ``drop_next(n)``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import regorus

_LOCATION = re.compile(r"-->\s*[^:\n]*:(\d+):(\d+)")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class OpaEmulator:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.latency_s = 0.0
        self.policies: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._fail: list[int] = []
        self._drop = 0
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> OpaEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        with self._lock:
            self._fail.extend([status] * count)

    def drop_next(self, count: int = 1) -> None:
        with self._lock:
            self._drop += count

    def clear_policies(self) -> None:
        """What an OPA restart does to policies uploaded through the API."""
        with self._lock:
            self.policies.clear()

    def _take_fault(self) -> tuple[bool, int | None]:
        with self._lock:
            if self._drop:
                self._drop -= 1
                return True, None
            return False, self._fail.pop(0) if self._fail else None

    def compile(self, policies: dict[str, str]) -> regorus.Engine:
        engine = regorus.Engine()
        for policy_id, text in policies.items():
            engine.add_policy(policy_id, text)
        return engine


class _Handler(BaseHTTPRequestHandler):
    owner: OpaEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        owner = self.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        owner.requests.append((method, self.path))
        if owner.latency_s:
            threading.Event().wait(owner.latency_s)
        drop, status = owner._take_fault()
        if drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if status is not None:
            return self._send(status, {"code": "internal_error", "message": "injected fault"})
        if owner.token and self.headers.get("Authorization") != f"Bearer {owner.token}":
            return self._send(401, {"code": "unauthorized", "message": "authentication required"})
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        if path == "/health" and method == "GET":
            return self._send(200, {})
        if path.startswith("/v1/policies"):
            return self._policies(method, path.removeprefix("/v1/policies").strip("/"), body)
        if path.startswith("/v1/data"):
            return self._data(method, path.removeprefix("/v1/data").strip("/"), body, query)
        self._send(404, {"code": "resource_not_found", "message": f"{path} not found"})

    def _policies(self, method: str, policy_id: str, body: bytes) -> None:
        owner = self.owner
        if not policy_id:
            if method != "GET":
                return self._send(405, {"code": "invalid_parameter", "message": "bad method"})
            with owner._lock:
                items = [{"id": i, "raw": t, "ast": {}} for i, t in owner.policies.items()]
            return self._send(200, {"result": items})
        if method == "GET":
            with owner._lock:
                raw = owner.policies.get(policy_id)
            if raw is None:
                return self._not_found(policy_id)
            return self._send(200, {"result": {"id": policy_id, "raw": raw, "ast": {}}})
        if method == "DELETE":
            with owner._lock:
                if owner.policies.pop(policy_id, None) is None:
                    return self._not_found(policy_id)
            return self._send(200, {})
        if method != "PUT":
            return self._send(405, {"code": "invalid_parameter", "message": "bad method"})
        text = body.decode("utf-8", "replace")
        with owner._lock:
            candidate = {**owner.policies, policy_id: text}
            try:
                owner.compile(candidate)
            except RuntimeError as exc:
                return self._send(400, _compile_error(policy_id, str(exc)))
            owner.policies[policy_id] = text
        self._send(200, {})

    def _data(self, method: str, path: str, body: bytes, query: dict[str, list[str]]) -> None:
        if method not in ("GET", "POST"):
            return self._send(405, {"code": "invalid_parameter", "message": "bad method"})
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            return self._send(400, {"code": "invalid_parameter", "message": "body is not JSON"})
        with self.owner._lock:
            policies = dict(self.owner.policies)
        ref = "data" + "".join(f".{segment}" for segment in path.split("/") if segment)
        try:
            engine = self.owner.compile(policies)
            if "input" in request:
                engine.set_input_json(json.dumps(request["input"]))
            rows = json.loads(engine.eval_query_as_json(ref)).get("result") or []
        except RuntimeError as exc:
            message = str(exc).split("Stack backtrace:")[0].strip()
            return self._send(500, {"code": "internal_error", "message": message})
        except BaseException as exc:  # noqa: BLE001 - regorus panics are BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            return self._send(500, {"code": "internal_error", "message": str(exc)})
        if not rows:
            return self._send(200, {})
        self._send(200, {"result": rows[0]["expressions"][0]["value"]})

    def _not_found(self, policy_id: str) -> None:
        self._send(
            404,
            {
                "code": "resource_not_found",
                "message": f'storage_not_found_error: policy id "{policy_id}"',
            },
        )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _compile_error(policy_id: str, message: str) -> dict[str, Any]:
    message = message.split("Stack backtrace:")[0].strip()
    error: dict[str, Any] = {"code": "rego_parse_error", "message": message.splitlines()[-1]}
    match = _LOCATION.search(message)
    if match:
        error["location"] = {"file": policy_id, "row": int(match[1]), "col": int(match[2])}
    return {
        "code": "invalid_parameter",
        "message": "error(s) occurred while compiling module(s)",
        "errors": [error],
    }

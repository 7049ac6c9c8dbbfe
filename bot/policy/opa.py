"""The ``opa`` backend: an OPA server driven through opa-python-client.

Policies are uploaded with ``PUT /v1/policies/{id}`` under ids unique to this policy
set, together with a small generated module that evaluates the configured package
once per object (``with input as obj with data.sluice as ...``).  One
``POST /v1/data/<batch package>/results`` therefore judges a whole app, with the
same per-object input and ``data.sluice`` the embedded engines see.  Any
connection error, timeout or 5xx fails closed.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient
from opa_client.errors import DeletePolicyError, RegoParseError, TypeException

from bot.models import K8sObject, PolicyResult
from bot.policy.conventions import error_result, result_for
from bot.policy.engine import PolicyEngine, gate_module, gate_rules

log = logging.getLogger(__name__)


class OpaUnavailable(Exception):
    """The OPA server could not be reached or answered with an error status."""


class OpaEngine(PolicyEngine):
    def __init__(
        self,
        sources: dict[str, str],
        *,
        package: str,
        url: str,
        token: str | None,
        timeout_s: float,
    ) -> None:
        digest = hashlib.sha256(repr(sorted(sources.items())).encode()).hexdigest()[:16]
        self._batch_package = f"sluice_gate_{digest}"
        self._modules = {f"sluice/{digest}/{path}": (path, text) for path, text in sources.items()}
        batch_id = f"sluice/{digest}/__gate.rego"
        self._rules = gate_rules(sources, package)
        batch_text = gate_module(self._batch_package, package, self._rules, batch=True)
        self._modules[batch_id] = ("(generated gate module)", batch_text)
        self._url = url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid OPA URL {url!r}; expected http(s)://host:port")
        self._client = OpaClient(
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 8181),
            ssl=parts.scheme == "https",
            token=token,
            timeout=timeout_s,
            retries=1,
        )
        self._uploaded: set[str] = set()
        self._compile_error: str | None = None
        try:
            self._upload()
        except OpaUnavailable as exc:
            # Not fatal yet: evaluate() retries the upload and fails closed if it must.
            log.warning("policy upload deferred: %s", exc)

    def evaluate(self, objects: list[K8sObject], app: dict[str, Any]) -> PolicyResult:
        try:
            self._upload()
            if self._compile_error:
                return error_result(f"policy compilation failed: {self._compile_error}")
            documents = self._query(objects, app)
        except OpaUnavailable as exc:
            return error_result(str(exc))
        if documents is None:
            # The server answered without our module: it lost its policies (restart).
            self._uploaded.clear()
            return error_result(
                "the OPA server does not have the policies loaded (was it restarted?)"
            )
        return result_for(self._rules, objects, documents)

    def close(self) -> None:
        for policy_id in sorted(self._uploaded):
            try:
                self._client.delete_policy(policy_id)
            except (requests.RequestException, DeletePolicyError, ValueError) as exc:
                log.warning(
                    "could not delete policy %s from OPA: %s", policy_id, type(exc).__name__
                )
        self._uploaded.clear()
        self._client.close_connection()

    def _upload(self) -> None:
        """Upload what is missing; files may depend on each other, so retry in passes."""
        if self._compile_error:
            return
        pending = [pid for pid in self._modules if pid not in self._uploaded]
        errors: dict[str, str] = {}
        while pending:
            errors = {}
            for policy_id in pending:
                path, text = self._modules[policy_id]
                try:
                    self._client.update_policy_from_string(text, policy_id, rego_compat=False)
                except RegoParseError as exc:
                    if exc.expression != "invalid_parameter":
                        raise OpaUnavailable(
                            f"OPA server rejected the policy upload: {exc.expression}"
                        ) from None
                    errors[policy_id] = f"{path}: {_parse_error_text(exc)}"
                    continue
                except (requests.RequestException, TypeException, ValueError) as exc:
                    raise OpaUnavailable(self._unavailable(exc)) from None
                self._uploaded.add(policy_id)
            if len(errors) == len(pending):
                break
            pending = list(errors)
        if errors:
            self._compile_error = "\n".join(errors.values())

    def _query(self, objects: list[K8sObject], app: dict[str, Any]) -> list[Any] | None:
        payload = {"objects": objects, "sluice": {"app": app, "objects": objects}}
        try:
            body = self._client.query_rule(
                payload,
                self._batch_package,
                "results",
                query_params={"strict-builtin-errors": "true"},
            )
        except requests.HTTPError as exc:
            raise OpaUnavailable(_http_error_text(exc)) from None
        except (requests.RequestException, ValueError) as exc:
            raise OpaUnavailable(self._unavailable(exc)) from None
        if not isinstance(body, dict) or "result" not in body:
            return None
        results = body["result"]
        if not isinstance(results, dict):
            raise OpaUnavailable("the OPA server returned a malformed result")
        return [results.get(str(i)) for i in range(len(objects))]

    def _unavailable(self, exc: Exception) -> str:
        if isinstance(exc, requests.Timeout):
            return f"OPA server at {self._url} timed out"
        if isinstance(exc, requests.ConnectionError):
            return f"OPA server at {self._url} is unreachable"
        if isinstance(exc, requests.HTTPError):
            return _http_error_text(exc)
        return f"OPA server at {self._url} failed: {type(exc).__name__}"


def _http_error_text(exc: requests.HTTPError) -> str:
    response = exc.response
    status = response.status_code if response is not None else "?"
    detail = ""
    if response is not None:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            detail = f": {body.get('code', '')} {body.get('message', '')}".rstrip()
    return f"OPA server returned HTTP {status}{detail}"


def _parse_error_text(exc: RegoParseError) -> str:
    details = [
        e.get("message", "")
        + (f" (line {e['location']['row']})" if isinstance(e.get("location"), dict) else "")
        for e in exc.errors
        if isinstance(e, dict)
    ]
    return "; ".join(d for d in details if d) or str(exc.message)

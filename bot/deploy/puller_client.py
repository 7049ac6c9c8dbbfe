"""The bot's HTTP client for the in-cluster puller's API (see PULLER_API in the design).

The bot only ever asks: ``wake`` tells the puller to look at the ledger now,
``app`` reads what it did and ``diff`` asks what given objects would change in the
live cluster (a server-side dry run). A wake-up is never an approval; the ledger is.
The bearer token travels in a header and never appears in an error or a repr.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from bot.models import K8sObject, ObjectChange

DEFAULT_TIMEOUT_S = 10.0
EVENT_TYPES = ("deploy", "drift")
_APP_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_ACTIONS = ("create", "update", "delete")
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


class PullerError(RuntimeError):
    """The puller could not be reached or answered something unusable."""


class PullerUnreachable(PullerError):
    """The puller did not answer at all (connection refused, timeout)."""


class PullerUnknownApp(PullerError):
    """The puller does not own the app asked about."""


class PullerTimeout(PullerError):
    """The puller did not reach the awaited state in time; ``last`` is what it last said."""

    def __init__(self, message: str, last: AppStatus | None) -> None:
        super().__init__(message)
        self.last = last


@dataclass(frozen=True)
class LastResult:
    """One sync the puller finished (``last_result`` / ``history`` entries)."""

    revision: str | None
    ledger_commit: str | None
    action: str
    pr: int | None
    result: str  # succeeded | failed
    health: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    pruned: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.result == "succeeded"

    @classmethod
    def from_dict(cls, data: Any) -> LastResult:
        if not isinstance(data, dict):
            raise PullerError("puller answered a result that is not an object")
        return cls(
            revision=_opt_str(data.get("revision")),
            ledger_commit=_opt_str(data.get("ledger_commit")),
            action=str(data.get("action") or ""),
            pr=data["pr"] if isinstance(data.get("pr"), int) else None,
            result=str(data.get("result") or ""),
            health=str(data.get("health") or "Unknown"),
            created=_count(data.get("created")),
            updated=_count(data.get("updated")),
            unchanged=_count(data.get("unchanged")),
            pruned=_count(data.get("pruned")),
            started_at=_opt_str(data.get("started_at")),
            finished_at=_opt_str(data.get("finished_at")),
            duration_s=float(data["duration_s"])
            if isinstance(data.get("duration_s"), int | float)
            else None,
            message=str(data.get("message") or ""),
        )


@dataclass(frozen=True)
class AppStatus:
    """``GET /v1/apps/<app>``: what the puller runs for one app, and how it went."""

    name: str
    revision: str | None
    ledger_commit: str | None
    desired_revision: str | None
    phase: str
    health: str
    message: str = ""
    drift: tuple[dict[str, Any], ...] = ()
    last_result: LastResult | None = None
    history: tuple[LastResult, ...] = ()

    @classmethod
    def from_dict(cls, data: Any) -> AppStatus:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise PullerError("puller answered an app status without a name")
        last = data.get("last_result")
        drift = data.get("drift") or []
        history = data.get("history") or []
        return cls(
            name=data["name"],
            revision=_opt_str(data.get("revision")),
            ledger_commit=_opt_str(data.get("ledger_commit")),
            desired_revision=_opt_str(data.get("desired_revision")),
            phase=str(data.get("phase") or "Unknown"),
            health=str(data.get("health") or "Unknown"),
            message=str(data.get("message") or ""),
            drift=tuple(d for d in drift if isinstance(d, dict)) if isinstance(drift, list) else (),
            last_result=LastResult.from_dict(last) if last is not None else None,
            history=tuple(LastResult.from_dict(h) for h in history)
            if isinstance(history, list)
            else (),
        )


@dataclass
class PullerClient:
    """Calls ``url`` (e.g. ``http://sluice-puller:8080``) with ``token`` as bearer."""

    url: str
    token: str = field(repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("puller URL must start with http:// or https://")
        if not self.token:
            raise ValueError("puller token is empty")
        self.url = self.url.rstrip("/")

    def wake(self, app: str | None = None) -> list[str]:
        """``POST /v1/wake``: the apps the puller queued."""
        body = {"app": app} if app else {}
        data = self._request("POST", "/v1/wake", body, expect=(200, 202))
        queued = data.get("queued") if isinstance(data, dict) else None
        return [str(a) for a in queued] if isinstance(queued, list) else []

    def app(self, name: str) -> AppStatus | None:
        """``GET /v1/apps/<name>``; None when the puller does not own the app."""
        data = self._request("GET", f"/v1/apps/{requests.utils.quote(name, safe='')}", None,
                             expect=(200, 404))  # fmt: skip
        if data is None:
            return None
        return AppStatus.from_dict(data)

    def apps(self) -> list[AppStatus]:
        data = self._request("GET", "/v1/apps", None, expect=(200,))
        items = data.get("apps") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise PullerError("puller answered /v1/apps without an apps list")
        return [AppStatus.from_dict(item) for item in items]

    def diff(self, app: str, objects: list[K8sObject]) -> list[ObjectChange]:
        """``POST /v1/diff``: what applying ``objects`` would change in the live cluster,
        Secrets masked by the puller. :class:`PullerUnknownApp` when the puller does not
        own ``app``; :class:`PullerError` for any other failure."""
        data = self._request(
            "POST", "/v1/diff", {"app": app, "objects": objects}, expect=(200, 404)
        )
        if data is None:
            raise PullerUnknownApp(f"the puller does not manage app {app!r}")
        changes = data.get("changes") if isinstance(data, dict) else None
        if not isinstance(changes, list):
            raise PullerError("POST /v1/diff: the puller answered without a changes list")
        return [_object_change(item) for item in changes]

    def follow(
        self,
        name: str,
        done: Callable[[AppStatus], bool],
        *,
        timeout_s: float,
        poll_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> AppStatus:
        """Poll ``/v1/apps/<name>`` until ``done(status)``; :class:`PullerTimeout` otherwise."""
        deadline = clock() + timeout_s
        last: AppStatus | None = None
        while True:
            try:
                last = self.app(name)
            except PullerError:
                if clock() >= deadline:
                    raise
                last = None
            if last is not None and done(last):
                return last
            if clock() >= deadline:
                raise PullerTimeout(f"the puller did not finish {name} within {timeout_s:g}s", last)
            sleep(poll_s)

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, *, expect: tuple[int, ...]
    ) -> Any:
        try:
            response = self.session.request(
                method,
                self.url + path,
                json=body,
                headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
                timeout=self.timeout_s,
            )
        except requests.Timeout:
            raise PullerUnreachable(f"{method} {path}: the puller did not answer in time") from None
        except requests.ConnectionError as exc:
            raise PullerUnreachable(
                f"{method} {path}: cannot reach the puller ({type(exc).__name__})"
            ) from None
        except requests.RequestException as exc:
            raise PullerError(
                f"{method} {path}: cannot reach the puller ({type(exc).__name__})"
            ) from None
        if response.status_code not in expect:
            raise PullerError(f"{method} {path}: the puller answered {response.status_code}"
                              f"{_error_detail(response)}")  # fmt: skip
        if response.status_code == 404:
            return None
        try:
            return response.json()
        except ValueError:
            raise PullerError(f"{method} {path}: the puller answered something not JSON") from None


def _error_detail(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    return f": {str(error)[:200]}" if error else ""


def _object_change(item: Any) -> ObjectChange:
    fields = ("apiVersion", "kind", "name", "diff")
    if (
        not isinstance(item, dict)
        or item.get("action") not in _ACTIONS
        or not all(isinstance(item.get(key), str) for key in fields)
        or not isinstance(item.get("namespace"), str | None)
    ):
        raise PullerError("POST /v1/diff: the puller answered a malformed change")
    return ObjectChange(
        action=item["action"],
        api_version=item["apiVersion"],
        kind=item["kind"],
        namespace=item["namespace"] or None,
        name=item["name"],
        diff=item["diff"],
    )


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def puller_event_problem(event: Any) -> str | None:
    """Why ``event`` is not a well-formed puller event (``POST /v1/puller/events``), or None."""
    if not isinstance(event, dict):
        return "body must be a JSON object"
    if event.get("type") not in EVENT_TYPES:
        return f"type: must be one of {', '.join(EVENT_TYPES)}"
    app = event.get("app")
    if not isinstance(app, str) or not _APP_NAME.match(app):
        return "app: must be an app name"
    pr = event.get("pr")
    if pr is not None and (not isinstance(pr, int) or isinstance(pr, bool) or pr < 1):
        return "pr: must be a positive integer or null"
    for key in ("ledger_commit", "revision"):
        value = event.get(key)
        if value is not None and (not isinstance(value, str) or not _SHA.match(value)):
            return f"{key}: must be a full commit SHA or null"
    if event["type"] == "deploy" and not isinstance(event.get("result"), dict):
        return "result: a deploy event needs the result object"
    if event["type"] == "drift" and not isinstance(event.get("drift"), list):
        return "drift: a drift event needs the list of drifted objects"
    return None

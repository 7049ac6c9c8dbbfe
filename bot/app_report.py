"""One app's report in a preview: its diff, its policy verdict (head and base) and the engines
that evaluate it.

``bot.preview`` selects and renders the apps; this module turns each app's two renders into
an ``AppReport``.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from bot.diff import diff_objects, mask_secret
from bot.evaluated import NormalizedRenders, PolicyResults
from bot.models import App, AppReport, PolicyResult, RenderedApp
from bot.policy import PolicyEngine
from bot.render.limits import NOT_RENDERED, PreviewBudget


def mark_new(head: PolicyResult, base: PolicyResult | None) -> PolicyResult:
    """``head`` with each violation marked new (not on the base render) or existing.
    Unknown (None) when the base has no evaluated render. Marks never change the gate."""
    if base is None or base.error:
        return head
    seen = {(v.severity, v.rule, v.kind, v.namespace, v.name, v.msg) for v in base.violations}
    marked = [
        replace(v, new=(v.severity, v.rule, v.kind, v.namespace, v.name, v.msg) not in seen)
        for v in head.violations
    ]
    return replace(head, violations=marked)


class PolicyPool:
    """A few policy engines evaluating apps in parallel with the diffs."""

    def __init__(
        self,
        new_engine: Callable[[], PolicyEngine],
        size: int,
        normal: NormalizedRenders,
        results: PolicyResults,
    ) -> None:
        self._normal, self._results = normal, results
        self._idle: queue.SimpleQueue[PolicyEngine] = queue.SimpleQueue()
        self._engines = [new_engine() for _ in range(size)]
        for engine in self._engines:
            self._idle.put(engine)
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="sluice-policy")

    def submit(self, rendered: RenderedApp, secret_key: bytes) -> Future[PolicyResult]:
        return self._pool.submit(self._evaluate, rendered, secret_key)

    def _evaluate(self, rendered: RenderedApp, secret_key: bytes) -> PolicyResult:
        app = rendered.app
        # Policies see masked Secrets: a rule message can then never quote a value.
        objects = [mask_secret(obj, secret_key) for obj in self._normal.of(rendered)]
        meta = {"name": app.name, "path": app.path, "namespace": app.namespace}
        # A render evaluated before (the shared base of most PRs) comes from the cache.
        return self._results.get_or_evaluate(objects, meta, lambda: self._run(objects, meta))

    def _run(self, objects: list[dict], meta: dict[str, object]) -> PolicyResult:
        engine = self._idle.get()
        try:
            return engine.evaluate(objects, meta)
        except RecursionError:
            return PolicyResult(verdict="error", error="objects are nested too deeply to evaluate")
        finally:
            self._idle.put(engine)

    def __enter__(self) -> PolicyPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for engine in self._engines:
            engine.close()


def over_budget(name: str, apps: dict[str, App], budget: PreviewBudget) -> AppReport:
    app = apps[name]
    message = (
        f"{NOT_RENDERED} this preview selects more than {budget.max_apps} apps "
        "(SLUICE_PREVIEW_MAX_APPS)"
    )
    return AppReport(name=name, path=app.path, renderer=app.renderer, status="error", error=message)


def budget_errors(apps: Iterable[AppReport]) -> list[str]:
    """One report error naming every app the preview's budget left unrendered; each such
    app is an error, even when only its base side went unrendered (fail closed)."""
    names = []
    for report in apps:
        if report.error and NOT_RENDERED in report.error:
            report.status = "error"
            names.append(report.name)
    if not names:
        return []
    shown = ", ".join(sorted(names)[:50])
    more = f" and {len(names) - 50} more" if len(names) > 50 else ""
    return [f"preview budget exceeded; not rendered: {shown}{more}"]


def checked_app_report(
    name: str,
    base: RenderedApp | None,
    head: RenderedApp | None,
    secret_key: bytes,
    normal: NormalizedRenders,
) -> AppReport:
    """:func:`app_report`; objects too deep to walk are that app's error, not the preview's."""
    try:
        return app_report(name, base, head, secret_key, normal)
    except RecursionError:
        current = head or base
        assert current is not None
        return AppReport(
            name=name,
            path=current.app.path,
            renderer=current.renderer,
            status="error",
            error=f"{current.app.path or '.'}: objects are nested too deeply to diff",
        )


def app_report(
    name: str,
    base: RenderedApp | None,
    head: RenderedApp | None,
    secret_key: bytes,
    normal: NormalizedRenders,
) -> AppReport:
    """Status and diff of one app; its policy verdict is filled in by the caller."""
    current = head or base
    assert current is not None
    app = current.app
    report = AppReport(name=name, path=app.path, renderer=current.renderer, status="unchanged")
    if head is not None and head.error:
        report.status = "error"
        report.error = head.error
        return report
    if current.unrendered:
        # Sources outside this repo (Argo CD / Flux apps): shown, never silently dropped.
        report.error = "; ".join(current.unrendered)
        if not app.sources:
            report.status = "not-rendered"
            return report
    if base is not None and head is not None and same_render(base, head):
        return report

    base_objects = normal.of(base) if base is not None and not base.error else []
    head_objects = normal.of(head) if head is not None else []
    report.changes = diff_objects(
        base_objects, head_objects, secret_key=secret_key, normalized=True
    )
    report.objects = head_objects
    if base is not None and base.error:
        report.error = f"base revision did not render ({base.error}); diff is against nothing"
    if head is None:
        report.status = "removed"
    elif base is None:
        report.status = "added"
    elif report.changes:
        report.status = "changed"
    return report


def same_input(base: RenderedApp, head: RenderedApp) -> bool:
    """Whether policy sees the same input on both sides (same objects, same app fields)."""
    same_app = (base.app.name, base.app.path) == (head.app.name, head.app.path)
    return same_app and same_render(base, head)


def same_render(base: RenderedApp, head: RenderedApp) -> bool:
    return (
        not base.error and base.app.namespace == head.app.namespace and base.objects == head.objects
    )

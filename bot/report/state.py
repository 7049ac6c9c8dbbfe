"""How each part of a report reads to a reviewer, shared by the comment and the page:
what blocks, an app's policy state, whether a violation is the PR's doing."""

from __future__ import annotations

from dataclasses import dataclass

from bot.models import AppReport, CommitCheck, Report, Violation
from bot.report.words import join_words, violation_object

POLICY_STATE = {
    "pass": "✅ pass",
    "warn": "⚠️ warn",
    "fail": "❌ deny",
    "error": "🛑 error",
    "overridden": "🔓 overridden",
    "not evaluated": "⏭️ not evaluated",
}


def policy_state(app: AppReport, report: Report) -> str:
    """One of the :data:`POLICY_STATE` keys. Policy never ran for an app that did not
    render; an overridden deny is not a pass."""
    if app.status in ("error", "not-rendered"):
        return "not evaluated"
    has_deny = any(v.severity == "deny" for v in app.policy.violations)
    if report.override and has_deny and app.policy.verdict != "fail":
        return "overridden"
    return app.policy.verdict


def is_blocking(app: AppReport) -> bool:
    return app.status == "error" or app.policy.verdict in ("fail", "error")


@dataclass(frozen=True)
class Found:
    """One violation with the app it belongs to and how it came to be."""

    app: str
    violation: Violation
    changed_here: bool  # the object is changed by this PR

    @property
    def origin(self) -> str:
        """``new``, ``existing, object changed`` or ``existing``: only the first two
        read as caused by this PR."""
        if self.violation.new is not False:
            return "new"
        return "existing, object changed" if self.changed_here else "existing"

    @property
    def caused_here(self) -> bool:
        return self.origin != "existing"

    @property
    def object(self) -> str:
        return violation_object(self.violation)


def violations(report: Report, severity: str) -> list[Found]:
    """Violations of ``severity``; those this PR causes come first, order kept otherwise."""
    found = []
    for app in report.apps:
        changed = {(c.kind, c.namespace, c.name) for c in app.changes}
        for v in app.policy.violations:
            if v.severity == severity:
                key = (v.kind, v.namespace, v.name)
                found.append(Found(app.name, v, key in changed))
    found.sort(key=lambda f: not f.caused_here)
    return found


def override_note(report: Report) -> str:
    """``"overridden by @x at T: reason"`` in plain words ("" without an override);
    the caller escapes it for its context."""
    override = report.override
    if not override:
        return ""
    by = str(override.get("by") or "unknown")
    at = str(override.get("at") or "").replace("+00:00", "Z")
    reason = str(override.get("reason") or "") or "(no reason given)"
    return f"overridden by @{by}{' at ' + at if at else ''}: {reason}"


def bad_commits(report: Report) -> list[CommitCheck]:
    return [c for c in report.signatures.commits if c.status != "valid"]


def render_errors(report: Report) -> list[tuple[str, str]]:
    """(label, message) for every error that blocks: config, render and policy engine."""
    items = [("Report", message) for message in report.errors]
    for app in report.apps:
        if app.status == "error" and app.error:
            items.append((f"Render error in {app.name}", app.error))
        if app.policy.error:
            items.append((f"Policy error in {app.name}", app.policy.error))
    return items


def headline_words(report: Report) -> str:
    if report.verdict == "pass":
        return "passed"
    if report.verdict == "warn":
        return "passed with warnings"
    if report.verdict == "fail":
        gates = failed_gates(report)
        return f"{join_words(gates)} failed" if gates else "checks failed"
    return "error"


def failed_gates(report: Report) -> list[str]:
    gates = []
    if report.errors or any(app.status == "error" for app in report.apps):
        gates.append("render")
    if any(app.policy.verdict in ("fail", "error") for app in report.apps):
        gates.append("policy")
    if report.signatures.verdict == "fail":
        gates.append("signatures")
    return gates

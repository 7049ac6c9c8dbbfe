"""Typed values passed between Sluice's layers.

Every layer takes and returns these plain dataclasses; the JSON report is
``Report.to_dict()`` and the Markdown comment is rendered from the same value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Renderer = Literal["auto", "plain", "kustomize", "helm"]
Verdict = Literal["pass", "warn", "fail", "error"]
# "not-rendered": the app's sources are outside this repository (named in ``error``).
AppStatus = Literal["changed", "unchanged", "added", "removed", "error", "not-rendered"]
Action = Literal["create", "update", "delete"]
SignatureStatus = Literal["valid", "unsigned", "untrusted", "invalid", "expired", "revoked"]
SignatureMode = Literal["off", "head", "all"]

K8sObject = dict[str, Any]

# Any app name: a .sluice.yaml one, or a discovered "argocd:<name>" / "flux:<namespace>/<name>"
# (bot.render.discovery). Safe as a ledger file path: the one "/" nests it a level, no "..".
ANY_APP_NAME = re.compile(
    r"^(?:argocd:|flux:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?/)?"
    r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$"
)

VERDICT_ORDER: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2, "error": 3}


def worst_verdict(verdicts: list[str], default: str = "pass") -> str:
    """The most severe of ``verdicts`` (error > fail > warn > pass)."""
    return max(verdicts, key=VERDICT_ORDER.__getitem__, default=default)


@dataclass(frozen=True)
class HelmSettings:
    release: str | None = None
    # Relative to the chart directory; a leading "/" means the repo root (Argo CD's rule).
    values: tuple[str, ...] = ()
    # Discovered apps only (Argo CD / Flux): skip missing values files; inline values
    # (canonical JSON, merged over the files); ``--set`` parameters (name, value, force string).
    ignore_missing: bool = False
    inline: str = ""
    parameters: tuple[tuple[str, str, bool], ...] = ()


@dataclass(frozen=True)
class AppSource:
    """One locally rendered source of an app discovered from Argo CD or Flux manifests."""

    path: str
    renderer: Renderer = "auto"
    helm: HelmSettings = field(default_factory=HelmSettings)
    # Argo CD directory sources: recurse into subdirectories, include/exclude globs.
    recurse: bool = False
    include: str = ""
    exclude: str = ""
    # Flux: a directory without kustomization.yaml is built from every manifest below it.
    flux: bool = False
    # Kustomization fields applied over the render (canonical JSON, "" = none).
    overlay: str = ""
    # Flux postBuild variables (canonical JSON {name: value}); None = no substitution.
    substitute: str | None = None
    # Flux substituteFrom sources that cannot be read from the repo (Secrets, missing).
    unresolved_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class App:
    """One deployable unit declared in ``.sluice.yaml``."""

    name: str
    path: str
    renderer: Renderer = "auto"
    namespace: str | None = None
    helm: HelmSettings = field(default_factory=HelmSettings)
    watch: tuple[str, ...] = ()
    # Deploy settings, read by the bot's promotion and by the puller.
    self_heal: bool = False
    sync_before_merge: bool = False
    allow_mass_prune: bool = False
    # Apps discovered from Argo CD / Flux manifests: how each local source renders
    # (empty for .sluice.yaml apps), and the sources left unrendered ("external source <url>").
    sources: tuple[AppSource, ...] = ()
    unrendered: tuple[str, ...] = ()


@dataclass
class RenderedApp:
    """The result of rendering one app at one revision."""

    app: App
    renderer: str  # the renderer actually used (never "auto")
    objects: list[K8sObject] = field(default_factory=list)
    error: str | None = None
    # Repo-relative files the render read; used for affected-app detection.
    inputs: frozenset[str] = frozenset()
    # What was left out of the render, e.g. "not rendered: external source <url>".
    unrendered: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObjectChange:
    action: Action
    api_version: str
    kind: str
    namespace: str | None
    name: str
    diff: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "diff": self.diff,
        }


@dataclass(frozen=True)
class Violation:
    severity: Literal["deny", "warn"]
    rule: str
    msg: str
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    # True: not present on the base render; False: already there; None: unknown
    # (the base did not render or has no such app). Never part of the gate.
    new: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "rule": self.rule,
            "msg": self.msg,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "new": self.new,
        }


@dataclass
class PolicyResult:
    verdict: Verdict = "pass"
    violations: list[Violation] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "verdict": self.verdict,
            "violations": [v.to_dict() for v in self.violations],
        }
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class CommitCheck:
    sha: str
    status: SignatureStatus
    method: Literal["gpg", "ssh", "none"]
    signer: str = ""
    fingerprint: str = ""
    detail: str = ""
    # The commit's subject line and author ("Name <email>"), for the report.
    subject: str = ""
    author: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "status": self.status,
            "method": self.method,
            "signer": self.signer,
            "fingerprint": self.fingerprint,
            "subject": self.subject,
            "author": self.author,
        }


@dataclass
class SignatureReport:
    verdict: Literal["pass", "fail", "skipped"] = "skipped"
    mode: SignatureMode = "off"
    commits: list[CommitCheck] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "mode": self.mode,
            "commits": [c.to_dict() for c in self.commits],
        }


@dataclass
class AppReport:
    name: str
    path: str
    renderer: str
    status: AppStatus
    error: str | None = None
    changes: list[ObjectChange] = field(default_factory=list)
    policy: PolicyResult = field(default_factory=PolicyResult)
    # The head's normalized objects (Secret values unmasked!) for the puller's live diff
    # only: never serialized, printed or compared.
    objects: list[K8sObject] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "renderer": self.renderer,
            "status": self.status,
            "error": self.error,
            "changes": [c.to_dict() for c in self.changes],
            "policy": self.policy.to_dict(),
        }


@dataclass
class Report:
    base: str
    head: str
    verdict: Verdict
    apps: list[AppReport] = field(default_factory=list)
    signatures: SignatureReport = field(default_factory=SignatureReport)
    # Problems that belong to no single app (e.g. a broken .sluice.yaml).
    errors: list[str] = field(default_factory=list)
    # Information that fails no gate, e.g. which Argo CD / Flux apps were discovered.
    notes: list[str] = field(default_factory=list)
    # Set when a policy owner overrode this head's deny violations (bot.deploy.overrides):
    # {"by", "reason", "head", "at", "violations"}; the key is absent from JSON otherwise.
    override: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "base": self.base,
            "head": self.head,
            "verdict": self.verdict,
            "apps": [a.to_dict() for a in self.apps],
            "signatures": self.signatures.to_dict(),
            "errors": list(self.errors),
        }
        if self.notes:
            out["notes"] = list(self.notes)
        if self.override is not None:
            out["override"] = dict(self.override)
        return out


def overall_verdict(report: Report) -> str:
    """The report's verdict from its parts: any app, report error or bad signature fails it."""
    verdicts = [app.policy.verdict for app in report.apps]
    if report.errors or any(app.status == "error" for app in report.apps):
        verdicts.append("fail")
    if report.signatures.verdict == "fail":
        verdicts.append("fail")
    return worst_verdict(verdicts)

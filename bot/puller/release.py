"""The plan decision: what a verified revision would put in the cluster, and whether policy allows it.

The app is rendered as ``.sluice.yaml`` AT THE REVISION defines it; the policies found at
the revision judge the rendered objects (Secrets masked). A deny passes only with a
``policy_override`` recorded in the signed ledger entry's gates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.config import REPO_CONFIG_FILE
from bot.deploy.ledger import LedgerEntry
from bot.diff import mask_secret, normalize
from bot.exports import ExportCache
from bot.gitops import Git
from bot.models import App, K8sObject
from bot.policy import make_engine
from bot.preview import load_policy_sources
from bot.puller.verify import MAX_LISTED_PROBLEMS, Cycle, Refused, repo_config
from bot.render import RenderCache, render_app


@dataclass
class Release:
    """A verified, rendered revision ready to apply."""

    entry: LedgerEntry
    ledger_commit: str
    app: App
    objects: list[K8sObject]
    note: str = ""


class Releases:
    """Renders revisions and evaluates policy on them."""

    def __init__(self, data_dir: Path, *, policy_engine: str, secret_key: bytes) -> None:
        self._exports = ExportCache(data_dir / "exports")
        self._renders = RenderCache(data_dir / "renders")
        self._policy_engine = policy_engine
        self._secret_key = secret_key

    def prepare(self, cycle: Cycle, name: str, entry: LedgerEntry, writer: str) -> Release:
        app, objects = self.render(cycle.git, name, entry.revision)
        note = self._check_policy(cycle, app, entry, objects)
        return Release(entry=entry, ledger_commit=writer, app=app, objects=objects, note=note)

    def render(self, git: Git, name: str, revision: str) -> tuple[App, list[K8sObject]]:
        config = repo_config(git, revision, f"revision {revision[:12]}", phase="Failed")
        app = config.app(name)
        if app is None:
            raise Refused(
                f"{REPO_CONFIG_FILE} at revision {revision[:12]} defines no app {name!r}", "Failed"
            )
        with self._exports.lease(git, revision) as root:
            rendered = render_app(app, root, cache=self._renders)
        if rendered.error:
            raise Refused(f"render failed at {revision[:12]}: {rendered.error}", "Failed")
        return app, [normalize(obj, app.namespace) for obj in rendered.objects]

    def _check_policy(
        self, cycle: Cycle, app: App, entry: LedgerEntry, objects: list[K8sObject]
    ) -> str:
        settings = cycle.gate.policy
        sources = load_policy_sources(cycle.git, entry.revision, settings.paths)
        masked = [mask_secret(obj, self._secret_key) for obj in objects]
        meta = {"name": app.name, "path": app.path, "namespace": app.namespace}
        with make_engine(self._policy_engine, sources, package=settings.package) as engine:
            result = engine.evaluate(masked, meta)
        if result.verdict == "error":
            raise Refused(f"policy could not be evaluated: {result.error}")
        if result.verdict != "fail":
            return ""
        denials = [v for v in result.violations if v.severity == "deny"]
        listed = "; ".join(
            f"{v.rule}: {v.msg}" + (f" ({v.kind}/{v.name})" if v.kind else "")
            for v in denials[:MAX_LISTED_PROBLEMS]
        )
        override = entry.gates.get("policy_override")
        overridden = entry.gates.get("policy") == "overridden"
        if overridden and isinstance(override, dict) and override.get("by"):
            return f"policy denials overridden by {override['by']} as recorded in the ledger"
        raise Refused(f"policy denies revision {entry.revision[:12]}: {listed}")

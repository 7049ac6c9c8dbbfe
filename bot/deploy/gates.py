"""Merge-to-deploy on the bot's side: gates at the merge, the signed ledger, the puller.

``Promoter`` is forge-agnostic (it takes a ``bot.forge.base.Forge``) and owns:

* promotion of a merged pull request (``on_merged``): the gates run again at the
  merge commit and, when every one holds, ONE signed ledger commit approves the
  merge commit for each affected app; it is pushed with the bot's credentials,
  the puller is woken and followed, and the PR gets the deploy report and a
  ``sluice/deploy/<app>`` status per app. When a gate fails nothing is written:
  the PR gets a comment naming the gate and a failure status per app.
* ``/sync``, ``/rollback`` (with the revert PR and the pin), puller events.

Gates at the merge, and why they are computed this way:

* renders and policies run on the merge commit against its first parent (the
  tracked branch before the merge; for a fast-forward, the PR's base), with
  policies and gate settings read from that base;
* signatures are checked per the base's mode over ``base..<PR head>``: a merge
  commit made by the forge is never signed by a maintainer, so what must carry
  signatures is the work the PR brought. A two-parent merge must have the PR head
  as its second parent. A squash or rebase merge is a forge-made commit whose
  content is checked (render, policy) but whose authorship cannot be: documented gap;
* approvals count distinct users who approved exactly the merged head SHA,
  never the PR author nor the bot; the number comes from the server config;
* policy denials pass only with a ``/approve-policy`` recorded for that head SHA
  and exactly these denials (``bot.deploy.overrides``).

Ordering: one deploy per app at a time (an in-process lock per app, held from the
ledger write until the puller has reported, which is enough because one job
process runs every job), and the ledger only moves forward along the tracked
branch: a merge that is an ancestor of what the ledger already names is
"superseded" rather than deployed, so merges that finish out of order never
deploy an older revision last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.config import REPO_CONFIG_FILE, ConfigError, RepoConfig, parse_repo_config
from bot.config.server import RepoSettings, ServerConfig
from bot.deploy.comments import (
    Outcome,
    changed_anything,
    comment_notes,
    deploy_comment,
    drift_comment,
    held_comment,
    outcome_description,
    outcomes_line,
)
from bot.deploy.ledger import BotSigner, Ledger, LedgerEntry, LedgerError
from bot.deploy.overrides import OverrideStore, apply_override, pr_key, violations_fingerprint
from bot.deploy.pins import DeployLog, DeployRecord, Pin, PinStore, repo_key
from bot.deploy.puller_client import (
    AppStatus,
    LastResult,
    PullerClient,
    PullerError,
    PullerTimeout,
    puller_event_problem,
)
from bot.forge.base import Forge, ForgeError, PullRequest, RepoRef, StatusState
from bot.gitops import GIT_TIMEOUT_S, ExportCache, Git, GitError, Mirrors, remote_env
from bot.models import Report, overall_verdict
from bot.preview import PreviewError, PreviewOptions, run_preview
from bot.render import affected_apps
from bot.report.escape import code, one_line, text, truncate
from bot.server.worker import RetryableError
from bot.signatures import SignatureVerifier, TrustedKeys

log = logging.getLogger(__name__)

DEPLOY_CONTEXT = "sluice/deploy/{app}"
REVERT_BRANCH = "sluice/revert-{number}"
DEFAULT_FOLLOW_TIMEOUT_S = 300.0
DEFAULT_POLL_S = 2.0
MAX_LISTED_FAILURES = 10
_STATUS_LIMIT = 140


def deploy_context(app: str) -> str:
    return DEPLOY_CONTEXT.format(app=app)


# -- values ----------------------------------------------------------------------------


@dataclass
class GateResult:
    """The gates for one revision: what failed (empty: all passed) and what to record."""

    report: Report
    apps: list[str]
    failures: list[str] = field(default_factory=list)
    approved_by: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures


class AppLocks:
    """One lock per (repo, app) in this process: one deploy per app at a time."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    @contextmanager
    def hold(self, repo: str, apps: list[str]) -> Iterator[None]:
        with self._guard:
            locks = [self._locks.setdefault((repo, a), threading.Lock()) for a in sorted(set(apps))]
        taken: list[threading.Lock] = []
        try:
            for lock in locks:  # sorted order: two holders never wait on each other
                lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()


# -- the promoter ------------------------------------------------------------------------


@dataclass
class Promoter:
    """Merge-to-deploy for every repository the bot serves. See the module docstring."""

    config: ServerConfig
    mirrors: Mirrors
    overrides: OverrideStore
    pins: PinStore
    deploy_log: DeployLog
    signer: BotSigner
    cache_dir: Path
    puller: PullerClient | None = None
    #: Called for each open PR whose preview went stale because a deploy moved its base.
    requeue_preview: Callable[[Forge, PullRequest], None] | None = None
    follow_timeout_s: float = DEFAULT_FOLLOW_TIMEOUT_S
    poll_s: float = DEFAULT_POLL_S
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    locks: AppLocks = field(default_factory=AppLocks)

    @classmethod
    def from_config(
        cls,
        config: ServerConfig,
        *,
        mirrors: Mirrors,
        overrides: OverrideStore,
        cache_dir: Path,
        requeue_preview: Callable[[Forge, PullRequest], None] | None = None,
    ) -> Promoter | None:
        """The promoter ``sluice serve`` runs; None when deploys are off (no signing key)."""
        if config.signing is None:
            return None
        puller = None
        if config.puller_url and config.puller_token:
            puller = PullerClient(config.puller_url, config.puller_token)
        return cls(
            config=config,
            mirrors=mirrors,
            overrides=overrides,
            pins=PinStore(config.db_path),
            deploy_log=DeployLog(config.db_path),
            signer=BotSigner(config.signing),
            cache_dir=cache_dir,
            puller=puller,
            requeue_preview=requeue_preview,
        )

    # -- promotion on merge ---------------------------------------------------------

    def on_merged(self, forge: Forge, pr: PullRequest) -> None:
        """Promote a merged PR (idempotent: a re-run records nothing twice)."""
        if pr.state != "merged" or not pr.merge_sha:
            log.info("%s#%s is not merged; nothing to promote", pr.repo.full_name, pr.number)
            return
        settings = self._settings(pr.repo)
        if pr.base_ref != settings.tracked_branch:
            log.info("%s#%s merged into %s, not the tracked branch %s; no deploy",
                     pr.repo.full_name, pr.number, pr.base_ref, settings.tracked_branch)  # fmt: skip
            return
        key = repo_key(pr.repo.forge, pr.repo.full_name)
        unpinned = self.pins.unpin_revert(key, pr.number)
        git = self._mirror(forge, pr.repo, settings, [pr.merge_sha, pr.head_sha], pr.head_clone_url)
        base = self._merge_base_side(git, pr)
        gates = self._gates(forge, git, pr, settings, base=base, head=pr.merge_sha)
        if not gates.apps:
            log.info("%s#%s affects no app; nothing to deploy", pr.repo.full_name, pr.number)
            return
        with self.locks.hold(key, gates.apps):
            if not gates.passed:
                self._refuse(forge, pr, gates, pr.merge_sha)
                return
            self._promote(forge, git, pr, settings, gates, unpinned)

    def _promote(
        self,
        forge: Forge,
        git: Git,
        pr: PullRequest,
        settings: RepoSettings,
        gates: GateResult,
        unpinned: list[str],
    ) -> None:
        merge = pr.merge_sha
        assert merge is not None
        key = repo_key(pr.repo.forge, pr.repo.full_name)
        self._sync_ledger(forge, git, pr.repo, settings)
        ledger = Ledger(git, settings.ledger_branch)
        deploy, done, notes = [], [], []
        for app in gates.apps:
            pin = self.pins.get(key, app)
            current = ledger.read(app)
            if pin is not None:
                self._status(forge, pr.repo, merge, app, "failure", pin.reason())
                notes.append(f"`{app}` is {pin.reason()}: this merge is not deployed.")
            elif current is not None and current.revision == merge:
                done.append(app)  # recorded by an earlier run of this job
            elif current is not None and git.is_ancestor(merge, current.revision):
                self._status(forge, pr.repo, merge, app, "success",
                             f"superseded: {current.revision[:12]} is deployed and contains it")  # fmt: skip
                notes.append(f"`{app}`: a later merge ({current.revision[:12]}) already deploys "
                             "this change.")  # fmt: skip
            else:
                deploy.append(app)
        if not deploy and not done:
            if notes:
                forge.create_comment(pr, held_comment(merge, notes))
            return
        if deploy:
            entries = [
                LedgerEntry(
                    app=app,
                    revision=merge,
                    action="deploy",
                    pr=pr.number,
                    pr_url=_http_url(pr.url),
                    approved_by=gates.approved_by,
                    gates=gates.summary,
                )
                for app in deploy
            ]
            ledger_commit = self._record(
                forge, git, pr.repo, ledger, entries, _message("deploy", deploy, merge, pr)
            )
            self.deploy_log.add([_log_record(pr, ledger_commit, app, merge, "deploy")
                                 for app in deploy])  # fmt: skip
        apps = deploy + done
        ledger_commit = self._writer(ledger, apps[0])
        if unpinned:
            notes.append(f"Unpinned {', '.join(f'`{a}`' for a in unpinned)}: this was the revert.")
        self.follow(forge, pr, ledger_commit, apps, status_sha=merge, notes=notes)
        self._requeue_stale(forge, pr, settings, git, apps)

    def _merge_base_side(self, git: Git, pr: PullRequest) -> str:
        """The revision the merge is compared with (the tracked branch just before it)."""
        assert pr.merge_sha is not None
        if pr.merge_sha == pr.head_sha:  # fast-forward
            return pr.base_sha
        return git.resolve(f"{pr.merge_sha}^1")

    # -- gates -------------------------------------------------------------------------

    def _gates(
        self,
        forge: Forge,
        git: Git,
        pr: PullRequest,
        settings: RepoSettings,
        *,
        base: str,
        head: str,
        only_apps: tuple[str, ...] = (),
    ) -> GateResult:
        options = PreviewOptions(
            keys_dir=self.config.trusted_keys,
            policy_backend=settings.policy_engine,
            opa_url=settings.opa_url,
            cache_dir=self.cache_dir,
            extra_apps=only_apps,
            only_apps=only_apps,
        )
        try:
            report = run_preview(git.path, base, head, options)
        except PreviewError as exc:
            raise RetryableError(f"gates at {head[:12]} could not run: {exc}") from None
        failures: list[str] = []
        if head != pr.head_sha:
            failures += self._check_merge_shape(git, pr, head)
            report.signatures = self._signatures(git, base, pr.head_sha)
            report.verdict = overall_verdict(report)  # type: ignore[assignment]
        override = self.overrides.active(
            pr_key(pr.repo, pr.number), pr.head_sha, violations_fingerprint(report)
        )
        if override is not None:
            report = _with_override(report, override, pr.head_sha)
        failures += _report_failures(report)
        approved_by, approval_failure = self._approvals(forge, pr, settings)
        if approval_failure:
            failures.append(approval_failure)
        summary: dict[str, Any] = {
            "render": "pass",
            "policy": "pass" if not report.override else "overridden",
            "signatures": report.signatures.verdict,
            "approvals": f"{len(approved_by)}/{self.config.approvals_required(settings)}",
        }
        if any(v.severity == "warn" for a in report.apps for v in a.policy.violations):
            summary["policy"] = "warn" if not report.override else "overridden"
        if report.override:
            summary["policy_override"] = {
                k: report.override[k] for k in ("by", "reason", "at") if k in report.override
            }
        apps = [a.name for a in report.apps if a.status != "removed"]
        return GateResult(report, apps, failures, approved_by, summary)

    def _check_merge_shape(self, git: Git, pr: PullRequest, merge: str) -> list[str]:
        parents = git.run("rev-list", "--parents", "-n1", merge).decode().split()[1:]
        if len(parents) == 2 and parents[1] != pr.head_sha:
            return [
                f"merge: the merge commit {merge[:12]} merges {parents[1][:12]}, not the "
                f"reviewed head {pr.head_sha[:12]}"
            ]
        return []

    def _signatures(self, git: Git, base: str, head: str):
        mode = _gate_config(git, base).signatures.mode
        keys = TrustedKeys.load(self.config.trusted_keys) if self.config.trusted_keys else None
        with SignatureVerifier(
            keys or TrustedKeys.empty(), cache_dir=self.cache_dir / "signatures"
        ) as verifier:
            return verifier.verify(git, base, head, mode)

    def _approvals(
        self, forge: Forge, pr: PullRequest, settings: RepoSettings
    ) -> tuple[list[str], str | None]:
        required = self.config.approvals_required(settings)
        bot = self._bot_login(forge).lower()
        approvals = forge.approvals(pr)
        valid = sorted(
            {
                a.user
                for a in approvals
                if a.sha == pr.head_sha and a.user.lower() not in (pr.author.lower(), bot)
            },
            key=str.lower,
        )
        if len(valid) >= required:
            return valid, None
        stale = sorted({a.user for a in approvals if a.sha != pr.head_sha})
        own = any(a.user.lower() == pr.author.lower() for a in approvals)
        detail = [f"{len(valid)} of {required} required approvals for the head {pr.head_sha[:12]}"]
        if stale:
            detail.append(
                "approvals of older commits do not count ("
                + ", ".join(code(u) for u in stale)
                + ")"
            )
        if own:
            detail.append("the author's own approval does not count")
        return valid, "approvals: " + "; ".join(detail)

    def _refuse(self, forge: Forge, pr: PullRequest, gates: GateResult, sha: str) -> None:
        first = gates.failures[0].split(":", 1)[0]
        for app in gates.apps:
            self._status(forge, pr.repo, sha, app, "failure", f"not deployed: {first} gate failed")
        lines = [
            f"### ⛔ Sluice did not deploy {code(sha[:12])}",
            "",
            "No ledger entry was written: these gates failed at the merge commit.",
            "",
            *[f"- {line}" for line in gates.failures[:MAX_LISTED_FAILURES]],
        ]
        if len(gates.failures) > MAX_LISTED_FAILURES:
            lines.append(f"- … and {len(gates.failures) - MAX_LISTED_FAILURES} more")
        lines += ["", "Apps not deployed: " + ", ".join(code(a) for a in gates.apps)]
        forge.create_comment(pr, "\n".join(lines))

    # -- following the puller -------------------------------------------------------

    def follow(
        self,
        forge: Forge,
        pr: PullRequest,
        ledger_commit: str,
        apps: list[str],
        *,
        status_sha: str,
        notes: list[str] | None = None,
        heading: str | None = None,
    ) -> list[Outcome]:
        """Wake the puller for ``apps``, wait until it ran ``ledger_commit``, report on ``pr``."""

        def ran(status: AppStatus) -> LastResult | None:
            # Newest first. A wake-up that finds the deploy done already adds a "sync"
            # result after it: the deploy's own result is the one to report.
            results = [status.last_result, *status.history] if status.last_result else []
            return next((r for r in results if r.ledger_commit == ledger_commit
                         and r.action != "sync"), None)  # fmt: skip

        title = heading or f"### 🚀 Sluice deploy of {code(status_sha[:12])}"
        return self._wake_and_report(
            forge, pr, apps, lambda _app: ran, status_sha, title, ledger_commit, notes or []
        )

    def _wake_and_report(
        self,
        forge: Forge,
        pr: PullRequest,
        apps: list[str],
        result_for: Callable[[str], Callable[[AppStatus], LastResult | None]],
        status_sha: str,
        title: str,
        ledger_commit: str | None,
        notes: list[str],
    ) -> list[Outcome]:
        where = f" (ledger commit {code(ledger_commit[:12])})" if ledger_commit else ""
        if self.puller is None:
            for app in apps:
                self._status(forge, pr.repo, status_sha, app, "pending",
                             "approved in the ledger; waiting for the puller's next cycle")  # fmt: skip
            body = [title, "", f"Approved in the ledger{where}. No puller URL is configured, so "
                    "the puller picks it up on its next cycle and reports back.", *comment_notes(notes)]  # fmt: skip
            forge.create_comment(pr, "\n".join(body))
            return []
        for app in apps:
            self._status(forge, pr.repo, status_sha, app, "pending",
                         f"approved{' in ledger ' + ledger_commit[:12] if ledger_commit else ''}; "
                         "the puller is deploying")  # fmt: skip
        outcomes = [self._follow_one(app, result_for(app)) for app in apps]
        for outcome in outcomes:
            self._status(forge, pr.repo, status_sha, outcome.app, outcome.state,
                         outcome_description(outcome))  # fmt: skip
            if ledger_commit and outcome.result is not None:
                record = self.deploy_log.get(outcome.app, ledger_commit)
                if record is not None:
                    self.deploy_log.mark_reported(record.id)
        forge.create_comment(pr, deploy_comment(title, where, outcomes, notes))
        return outcomes

    def _follow_one(self, app: str, result: Callable[[AppStatus], LastResult | None]) -> Outcome:
        """Wake the puller for ``app`` and wait until ``result`` picks what it awaits."""
        assert self.puller is not None
        try:
            self.puller.wake(app)
            status = self.puller.follow(
                app, lambda s: result(s) is not None, timeout_s=self.follow_timeout_s,
                poll_s=self.poll_s,
            )  # fmt: skip
        except PullerTimeout as exc:
            phase = f" (last phase: {exc.last.phase})" if exc.last else ""
            return Outcome(app, None, problem=f"timed out waiting for the puller{phase}; it "
                           "reports back when it finishes")  # fmt: skip
        except PullerError as exc:
            return Outcome(app, None, problem=str(exc))
        return Outcome(app, result(status), status.health)

    # -- /sync ---------------------------------------------------------------------------

    def sync(self, forge: Forge, pr: PullRequest, actor: str, apps: tuple[str, ...] = ()) -> str:
        """``/sync [app…]``: the reply text. See the module docstring."""
        settings = self._settings(pr.repo)
        if pr.state == "closed":
            return "`/sync`: this pull request was closed without merging; nothing of it deploys."
        if pr.state == "open":
            return self._sync_open(forge, pr, actor, apps, settings)
        assert pr.merge_sha is not None
        git = self._mirror(forge, pr.repo, settings, [pr.merge_sha])
        self._sync_ledger(forge, git, pr.repo, settings)
        ledger = Ledger(git, settings.ledger_branch)
        config = _gate_config(git, f"refs/heads/{settings.tracked_branch}")
        unknown = [a for a in apps if config.app(a) is None]
        if unknown:
            return f"`/sync`: no app named {_names(unknown)} in `.sluice.yaml`."
        targets = list(apps) or [
            a.name for a in config.apps if (e := ledger.read(a.name)) and e.pr == pr.number
        ]
        if not targets:
            return (f"`/sync`: no app runs a revision from #{pr.number} now; name the apps to "
                    "reconcile, e.g. `/sync web`.")  # fmt: skip
        if self.puller is None:
            return "`/sync`: no puller is configured (SLUICE_PULLER_URL); nothing to wake."
        key = repo_key(pr.repo.forge, pr.repo.full_name)
        with self.locks.hold(key, targets):
            before = {app: self._last_result(app) for app in targets}

            def changed(app: str) -> Callable[[AppStatus], LastResult | None]:
                return lambda s: s.last_result if s.last_result != before[app] else None

            outcomes = self._wake_and_report(
                forge, pr, targets, changed, pr.merge_sha,
                f"### 🔁 Sluice sync requested by {code(actor)}", None, [],
            )  # fmt: skip
        return f"`/sync`: {outcomes_line(outcomes)}"

    def _sync_open(
        self,
        forge: Forge,
        pr: PullRequest,
        actor: str,
        apps: tuple[str, ...],
        settings: RepoSettings,
    ) -> str:
        git = self._mirror(forge, pr.repo, settings, [pr.base_sha, pr.head_sha], pr.head_clone_url)
        gate = _gate_config(git, pr.base_sha)  # deploy flags come from the base, like every gate
        unknown = [a for a in apps if gate.app(a) is None]
        if unknown:
            return f"`/sync`: no app named {_names(unknown)} in the base's `.sluice.yaml`."
        gates = self._gates(forge, git, pr, settings, base=pr.base_sha, head=pr.head_sha,
                            only_apps=apps)  # fmt: skip
        targets = list(apps) or gates.apps
        if not targets:
            return "`/sync`: this pull request affects no app."
        refused = [a for a in targets if not (gate.app(a) and gate.app(a).sync_before_merge)]
        if refused:
            return (
                f"`/sync` refused: this pull request is open, and {_names(refused)} "
                f"{'does' if len(refused) == 1 else 'do'} not allow deploying before merge "
                "(`sync_before_merge: true` in the base's `.sluice.yaml` allows it, for staging "
                "apps). Merge the pull request to deploy it."
            )
        if not gates.passed:
            return (
                "`/sync` refused: these gates failed for the head "
                + code(pr.head_sha[:12])
                + (":\n" + "\n".join(f"- {f}" for f in gates.failures[:MAX_LISTED_FAILURES]))
            )
        key = repo_key(pr.repo.forge, pr.repo.full_name)
        with self.locks.hold(key, targets):
            self._sync_ledger(forge, git, pr.repo, settings)
            ledger = Ledger(git, settings.ledger_branch)
            entries = [
                LedgerEntry(app=app, revision=pr.head_sha, action="preview-deploy", pr=pr.number,
                            pr_url=_http_url(pr.url), approved_by=gates.approved_by,
                            gates={**gates.summary, "requested_by": actor})
                for app in targets
            ]  # fmt: skip
            ledger_commit = self._record(
                forge, git, pr.repo, ledger, entries,
                _message("preview-deploy", targets, pr.head_sha, pr),
            )  # fmt: skip
            self.deploy_log.add([_log_record(pr, ledger_commit, a, pr.head_sha, "preview-deploy")
                                 for a in targets])  # fmt: skip
            outcomes = self.follow(
                forge, pr, ledger_commit, targets, status_sha=pr.head_sha,
                heading=f"### 🧪 Sluice preview-deploy of {code(pr.head_sha[:12])}",
            )  # fmt: skip
        return (f"`/sync`: preview-deploy of {code(pr.head_sha[:12])} recorded in ledger commit "
                f"{code(ledger_commit[:12])}; {outcomes_line(outcomes)}")  # fmt: skip

    # -- /rollback ------------------------------------------------------------------

    def rollback(
        self,
        forge: Forge,
        pr: PullRequest,
        actor: str,
        apps: tuple[str, ...] = (),
        to_rev: str | None = None,
    ) -> str:
        """``/rollback [app…] [--to REV]`` on a merged PR: the reply text."""
        if pr.state != "merged" or not pr.merge_sha:
            return "`/rollback` works on a merged pull request; this one is not merged."
        settings = self._settings(pr.repo)
        git = self._mirror(forge, pr.repo, settings, [pr.merge_sha])
        self._sync_ledger(forge, git, pr.repo, settings)
        ledger = Ledger(git, settings.ledger_branch)
        config = _gate_config(git, f"refs/heads/{settings.tracked_branch}")
        unknown = [a for a in apps if config.app(a) is None]
        if unknown:
            return f"`/rollback`: no app named {_names(unknown)} in `.sluice.yaml`."
        targets = list(apps) or [
            a.name for a in config.apps if _deployed_by(ledger, a.name, pr) is not None
        ]
        if not targets:
            return f"`/rollback`: #{pr.number} deployed no app, so there is nothing to roll back."
        plan: dict[str, str] = {}
        problems: list[str] = []
        for app in targets:
            target, problem = self._rollback_target(git, ledger, app, pr, to_rev)
            if problem:
                problems.append(problem)
            else:
                assert target is not None
                plan[app] = target
        if problems:
            return "`/rollback` refused, nothing was changed:\n" + "\n".join(
                f"- {p}" for p in problems
            )
        key = repo_key(pr.repo.forge, pr.repo.full_name)
        with self.locks.hold(key, targets):
            entries = [
                LedgerEntry(app=app, revision=rev, action="rollback", pr=pr.number,
                            pr_url=_http_url(pr.url), approved_by=[actor],
                            gates={"rollback_of": pr.merge_sha, "requested_by": actor})
                for app, rev in plan.items()
            ]  # fmt: skip
            ledger_commit = self._record(
                forge, git, pr.repo, ledger, entries, _message("rollback", targets, None, pr)
            )
            self.deploy_log.add(
                [_log_record(pr, ledger_commit, a, pr.merge_sha, "rollback") for a in targets]
            )
            revert, revert_problem = self._open_revert(forge, git, pr, settings)
            for app, rev in plan.items():
                self.pins.pin(Pin(key, app, pr.number, revert.number if revert else None, rev,
                                  actor, self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")))  # fmt: skip
            notes = [f"`{app}` → {code(rev[:12])}" for app, rev in plan.items()]
            if revert is not None:
                notes.append(f"Opened the revert pull request #{revert.number} ({revert.url}); "
                             f"{_names(targets)} stay pinned until it merges.")  # fmt: skip
            else:
                notes.append(f"Could not open a revert pull request: {revert_problem}. "
                             f"{_names(targets)} stay pinned; revert #{pr.number} by hand.")  # fmt: skip
            outcomes = self.follow(
                forge, pr, ledger_commit, targets, status_sha=pr.merge_sha, notes=notes,
                heading=f"### ⏪ Sluice rollback of #{pr.number} requested by {code(actor)}",
            )  # fmt: skip
        revert_text = (
            f"revert PR #{revert.number}: {revert.url}"
            if revert
            else f"no revert PR ({revert_problem})"
        )
        return (
            f"`/rollback`: {', '.join(f'{code(a)} → {code(r[:12])}' for a, r in plan.items())} "
            f"in ledger commit {code(ledger_commit[:12])}; {revert_text}; "
            f"pinned until the revert merges; {outcomes_line(outcomes)}"
        )

    def _rollback_target(
        self, git: Git, ledger: Ledger, app: str, pr: PullRequest, to_rev: str | None
    ) -> tuple[str | None, str | None]:
        history = ledger.history(app, limit=200)
        current = history[0][1] if history else None
        if to_rev is not None:
            earlier = [e.revision for _, e in history[1:]]
            sha = _resolve_revision(git, to_rev, earlier)
            shown = code(one_line(to_rev)[:80])
            if current is not None and sha == current.revision:
                return None, f"{code(app)} already runs {shown}"
            if sha is None or sha not in earlier:
                return None, (f"{shown} was never deployed for {code(app)}: `--to` must name an "
                              "earlier revision in the app's ledger history")  # fmt: skip
            return sha, None
        deployed = _deployed_by(ledger, app, pr)
        if deployed is None:
            return None, f"#{pr.number} never deployed {code(app)}"
        if deployed.previous is None:
            return None, (f"nothing was deployed for {code(app)} before #{pr.number}; "
                          "use `--to REV` with an earlier ledger revision")  # fmt: skip
        if current is not None and current.revision == deployed.previous:
            return None, f"{code(app)} already runs {code(deployed.previous[:12])}"
        return deployed.previous, None

    def _open_revert(
        self, forge: Forge, git: Git, pr: PullRequest, settings: RepoSettings
    ) -> tuple[PullRequest | None, str]:
        """A revert of the merge commit on top of the tracked branch, as a new PR."""
        assert pr.merge_sha is not None
        branch = REVERT_BRANCH.format(number=pr.number)
        try:
            sha = self._revert_commit(git, pr.merge_sha, f"refs/heads/{settings.tracked_branch}",
                                      branch)  # fmt: skip
            _push(git, pr.repo.clone_url, forge.clone_auth(pr.repo), f"+{sha}:refs/heads/{branch}")
        except GitError as exc:
            return None, str(exc)
        body = (
            f"Sluice rolled back the deploy of #{pr.number} ({pr.merge_sha[:12]}). Merging this "
            f"revert brings `{settings.tracked_branch}` back in line with what runs, and unpins "
            "the apps: until then later merges that touch them are held."
        )
        try:
            revert = forge.create_pull_request(
                pr.repo, branch, settings.tracked_branch, f"Revert #{pr.number}: {pr.title}", body
            )
        except ForgeError as exc:
            return None, str(exc)
        return revert, ""

    def _revert_commit(self, git: Git, merge: str, onto: str, branch: str) -> str:
        parents = git.run("rev-list", "--parents", "-n1", merge).decode().split()[1:]
        env = {**os.environ, **self.signer.environment(), "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="sluice-revert-") as tmp:
            tree = Path(tmp) / "worktree"
            git.run("worktree", "add", "--quiet", "--detach", str(tree), git.resolve(onto))
            try:
                args = [*self.signer.git_options(), "revert", "--no-edit", "-S"]
                if len(parents) > 1:
                    args += ["-m", "1"]
                proc = subprocess.run(
                    ["git", "-C", str(tree), *args, merge],
                    capture_output=True,
                    env=env,
                    timeout=GIT_TIMEOUT_S,
                )
                if proc.returncode != 0:
                    raise GitError(f"the revert of {merge[:12]} does not apply cleanly on the "
                                   f"tracked branch ({_last_line(proc)})")  # fmt: skip
                return Git(tree).resolve("HEAD")
            finally:
                git.run("worktree", "remove", "--force", str(tree), check=False)
                git.run("worktree", "prune", check=False)

    # -- puller events ----------------------------------------------------------------

    def on_puller_event(
        self, forge_lookup: Callable[[str], Forge], event: Mapping[str, Any]
    ) -> None:
        """A ``puller-event`` job: report a deploy result or drift on the PR that deployed."""
        problem = puller_event_problem(dict(event))
        if problem is not None:
            raise ValueError(f"malformed puller event: {problem}")
        app = str(event["app"])
        record = self.deploy_log.find(app, event.get("ledger_commit"))
        if record is None:
            log.warning("puller %s event for %s: no deploy of it by this bot", event["type"], app)
            return
        forge = forge_lookup(record.forge)
        repo = RepoRef(record.forge, record.repo, record.clone_url, record.project_id)  # type: ignore[arg-type]
        number = event.get("pr") or record.pr
        pr = forge.get_pull_request(repo, number) if number else None
        if event["type"] == "deploy":
            self._deploy_event(forge, repo, pr, record, event)
        else:
            self._drift_event(forge, repo, pr, record, event)

    def _deploy_event(
        self,
        forge: Forge,
        repo: RepoRef,
        pr: PullRequest | None,
        record: DeployRecord,
        event: Mapping[str, Any],
    ) -> None:
        result = LastResult.from_dict(event["result"])
        if result.action == "sync" and result.succeeded and not changed_anything(result):
            return  # a wake-up that found nothing to do: the deploy's status stands
        outcome = Outcome(record.app, result, result.health)
        self._status(forge, repo, record.status_sha, record.app, outcome.state,
                     outcome_description(outcome))  # fmt: skip
        if pr is None:
            return
        # A failure about a ledger commit other than the one this record reported (a
        # refused ledger, an entry this bot never wrote) is news: the PR must hear it.
        alert = not result.succeeded and result.ledger_commit != record.ledger_commit
        if record.reported and not alert:
            return  # the deploy report is on the PR already (the bot followed it)
        self.deploy_log.mark_reported(record.id)
        title = (
            f"### 🛑 The puller did not deploy {code(record.app)}"
            if alert
            else f"### 🚀 The puller finished {code(record.app)}"
        )
        forge.create_comment(pr, deploy_comment(title, "", [outcome], []))

    def _drift_event(
        self,
        forge: Forge,
        repo: RepoRef,
        pr: PullRequest | None,
        record: DeployRecord,
        event: Mapping[str, Any],
    ) -> None:
        drift = [d for d in event["drift"] if isinstance(d, dict)]
        fingerprint = (
            hashlib.sha256(json.dumps(drift, sort_keys=True).encode()).hexdigest()
            if drift
            else None
        )
        if not self.deploy_log.set_drift(record.id, fingerprint):
            return  # the same drift was reported already
        app = record.app
        revision = str(event.get("revision") or record.status_sha)
        if not drift:
            self._status(forge, repo, record.status_sha, app, "success",
                         f"no drift: the cluster matches {revision[:12]}")  # fmt: skip
            if pr is not None:
                forge.create_comment(pr, f"### ✅ Drift on {code(app)} is gone\n\nThe cluster "
                                     f"matches {code(revision[:12])} again.")  # fmt: skip
            return
        self._status(forge, repo, record.status_sha, app, "failure",
                     f"drift: {len(drift)} objects differ from {revision[:12]}")  # fmt: skip
        if pr is not None:
            forge.create_comment(pr, drift_comment(app, revision, drift))

    # -- push to the tracked branch ----------------------------------------------------

    def on_push(self, forge: Forge, repo: RepoRef, branch: str, sha: str) -> str:
        """A direct push to ``branch``: never deployed, and the reply says why.

        Approvals belong to pull requests, so a push cannot pass the approval gate.
        """
        settings = self._settings(repo)
        if branch != settings.tracked_branch:
            return f"{branch} is not the tracked branch; no deploy"
        return (f"a direct push to {branch} ({sha[:12]}) is not deployed: Sluice deploys only "
                "merged pull requests, whose approvals it can check")  # fmt: skip

    # -- plumbing ------------------------------------------------------------------------

    def _settings(self, repo: RepoRef) -> RepoSettings:
        return self.config.repo_settings(repo.forge, repo.full_name)

    def _bot_login(self, forge: Forge) -> str:
        return self.config.bot_login or forge.bot_login()

    def _mirror(
        self,
        forge: Forge,
        repo: RepoRef,
        settings: RepoSettings,
        shas: list[str],
        head_url: str | None = None,
    ) -> Git:
        auth = forge.clone_auth(repo)
        key = f"{forge.name}-{repo.full_name}"
        wants = [f"refs/heads/{settings.tracked_branch}", *shas]
        try:
            git = self.mirrors.fetch(key, repo.clone_url, wants, auth=auth)
            missing = [
                s for s in shas if git.run("cat-file", "-t", s, check=False).strip() != b"commit"
            ]
            if missing and head_url and head_url != repo.clone_url:
                git = self.mirrors.fetch(key, head_url, missing, auth=auth)
        except GitError as exc:
            raise RetryableError(str(exc)) from None
        return git

    def _sync_ledger(self, forge: Forge, git: Git, repo: RepoRef, settings: RepoSettings) -> None:
        """Make the mirror's ledger branch the remote's (it may not exist yet)."""
        ref = f"refs/heads/{settings.ledger_branch}"
        try:
            self.mirrors.fetch(f"{forge.name}-{repo.full_name}", repo.clone_url, [ref],
                               auth=forge.clone_auth(repo))  # fmt: skip
        except GitError as exc:
            if "couldn't find remote ref" not in str(exc):
                raise RetryableError(str(exc)) from None

    def _record(
        self,
        forge: Forge,
        git: Git,
        repo: RepoRef,
        ledger: Ledger,
        entries: list[LedgerEntry],
        message: str,
    ) -> str:
        try:
            ledger.record(entries, self.signer, message)
            ledger.push(repo.clone_url, forge.clone_auth(repo), signer=self.signer)
        except LedgerError as exc:
            raise RetryableError(f"ledger: {exc}") from None
        tip = ledger.tip()
        assert tip is not None
        return tip

    @staticmethod
    def _writer(ledger: Ledger, app: str) -> str:
        history = ledger.history(app, limit=1)
        if not history:
            raise LedgerError(f"the ledger has no entry for {app}")
        return history[0][0]

    def _last_result(self, app: str) -> LastResult | None:
        assert self.puller is not None
        try:
            status = self.puller.app(app)
        except PullerError:
            return None
        return status.last_result if status else None

    def _status(
        self, forge: Forge, repo: RepoRef, sha: str, app: str, state: StatusState, text_: str
    ) -> None:
        forge.set_status(repo, sha, deploy_context(app), state, truncate(text_, _STATUS_LIMIT))

    def _requeue_stale(
        self, forge: Forge, pr: PullRequest, settings: RepoSettings, git: Git, apps: list[str]
    ) -> None:
        """Re-preview open PRs into the tracked branch that touch a just-deployed app."""
        if self.requeue_preview is None or pr.merge_sha is None:
            return
        try:
            config = _gate_config(git, pr.merge_sha)
            root = ExportCache(self.cache_dir / "exports").get(git, pr.merge_sha)
            deployed = [a for a in config.apps if a.name in apps]
            for other in forge.open_pull_requests(pr.repo, settings.tracked_branch):
                if other.number == pr.number:
                    continue
                if affected_apps(deployed, forge.changed_files(other), root, root):
                    self.requeue_preview(forge, other)
        except (ForgeError, GitError, OSError) as exc:
            log.warning("could not re-preview open PRs after %s: %s", pr.merge_sha[:12], exc)


# -- helpers ----------------------------------------------------------------------------


def _gate_config(git: Git, rev: str) -> RepoConfig:
    raw = git.read_file(rev, REPO_CONFIG_FILE)
    if raw is None:
        return RepoConfig()
    try:
        return parse_repo_config(raw, REPO_CONFIG_FILE)
    except ConfigError:
        return RepoConfig()  # the preview reports the error; signatures default to "all"


def _with_override(report: Report, override: Any, head_sha: str) -> Report:
    """``apply_override`` for a report computed at the merge commit of that head."""
    merged_at = report.head
    result = apply_override(replace(report, head=head_sha), override)
    result.head = merged_at
    return result


def _report_failures(report: Report) -> list[str]:
    failures = [f"config: {text(error)}" for error in report.errors]
    for app in report.apps:
        if app.status == "error":
            failures.append(f"render: {code(app.name)} did not render: {text(app.error or '')}")
        elif app.policy.verdict == "error":
            failures.append(f"policy: {code(app.name)}: the policy engine failed: "
                            f"{text(app.policy.error or '')}")  # fmt: skip
        elif app.policy.verdict == "fail":
            denies = [v for v in app.policy.violations if v.severity == "deny"]
            shown = "; ".join(
                f"{code(v.rule)} on {code(f'{v.kind}/{v.name}')}: {text(v.msg)}" for v in denies[:5]
            )
            failures.append(f"policy: {code(app.name)}: {len(denies)} unapproved deny "
                            f"violation{'s' if len(denies) != 1 else ''}: {shown}")  # fmt: skip
    if report.signatures.verdict == "fail":
        bad = [c for c in report.signatures.commits if c.status != "valid"]
        shown = ", ".join(f"{code(c.sha[:12])} is {c.status}" for c in bad[:5])
        failures.append(
            f"signatures: {len(bad)} of {len(report.signatures.commits)} commits lack a "
            f"trusted signature (mode {report.signatures.mode}): {shown}"
        )
    return failures


def _resolve_revision(git: Git, rev: str, known: list[str]) -> str | None:
    """``rev`` as a full SHA: resolved in the mirror, else a unique prefix of a known one."""
    try:
        return git.resolve(rev)
    except GitError:
        wanted = rev.strip().lower()
        matches = {sha for sha in known if len(wanted) >= 7 and sha.startswith(wanted)}
        return matches.pop() if len(matches) == 1 else None


def _deployed_by(ledger: Ledger, app: str, pr: PullRequest) -> LedgerEntry | None:
    for _, entry in ledger.history(app, limit=200):
        if entry.pr == pr.number and entry.action == "deploy" and entry.revision == pr.merge_sha:
            return entry
    return None


def _log_record(pr: PullRequest, ledger_commit: str, app: str, sha: str | None, action: str):
    return DeployRecord(
        ledger_commit=ledger_commit,
        app=app,
        forge=pr.repo.forge,
        repo=pr.repo.full_name,
        clone_url=pr.repo.clone_url,
        project_id=pr.repo.project_id,
        pr=pr.number,
        status_sha=sha or pr.head_sha,
        action=action,
    )


def _message(action: str, apps: list[str], sha: str | None, pr: PullRequest) -> str:
    what = f" at {sha[:12]}" if sha else ""
    title = one_line(pr.title)[:200]
    return f"{action} {', '.join(apps)}{what} (#{pr.number})\n\n{title}\n"


def _http_url(url: str) -> str | None:
    return url if url.startswith(("https://", "http://")) else None


def _names(apps: list[str] | tuple[str, ...]) -> str:
    return ", ".join(code(a) for a in apps)


def _push(git: Git, url: str, auth: tuple[str, str] | None, refspec: str) -> None:
    proc = subprocess.run(
        ["git", "-C", str(git.path), "push", "--quiet", url, refspec],
        capture_output=True,
        env=remote_env(auth),
        timeout=GIT_TIMEOUT_S,
    )
    if proc.returncode != 0:
        detail = _last_line(proc)
        if "://" in url and "@" in url:  # never echo credentials embedded in a URL
            detail = detail.replace(url.split("://", 1)[1].split("@", 1)[0], "***")
        raise GitError(f"git push of the revert branch failed: {detail}")


def _last_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"

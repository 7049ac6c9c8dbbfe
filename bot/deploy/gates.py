"""The merge-time gates and approvals: whether a revision may be written to the ledger.

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
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bot.config import REPO_CONFIG_FILE, ConfigError, RepoConfig, parse_repo_config
from bot.config.server import RepoSettings
from bot.deploy.comments import refusal_comment
from bot.deploy.desk import DeployDesk
from bot.deploy.overrides import apply_override, pr_key, violations_fingerprint
from bot.errors import RetryableError
from bot.forge.base import Forge, PullRequest
from bot.gitops import Git
from bot.models import Report, overall_verdict
from bot.preview import PreviewError, PreviewOptions, run_preview
from bot.report.escape import code, text
from bot.signatures import SignatureVerifier, TrustedKeys


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


@dataclass
class Gates:
    """Runs the gates for a PR's revision and refuses, on the PR, what fails them."""

    desk: DeployDesk

    def check(
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
        config = self.desk.config
        options = PreviewOptions(
            keys_dir=config.trusted_keys,
            policy_backend=settings.policy_engine,
            opa_url=settings.opa_url,
            cache_dir=self.desk.cache_dir,
            extra_apps=only_apps,
            only_apps=only_apps,
            repo_urls=settings.repo_urls,
        )
        try:
            report = run_preview(git.path, base, head, options)
        except PreviewError as exc:
            raise RetryableError(f"gates at {head[:12]} could not run: {exc}") from None
        failures: list[str] = []
        if head != pr.head_sha:
            failures += _check_merge_shape(git, pr, head)
            report.signatures = self._signatures(git, base, pr.head_sha)
            report.verdict = overall_verdict(report)  # type: ignore[assignment]
        override = self.desk.overrides.active(
            pr_key(pr.repo, pr.number), pr.head_sha, violations_fingerprint(report)
        )
        if override is not None:
            report = _with_override(report, override, pr.head_sha)
        failures += report_failures(report)
        approved_by, approval_failure = self.approvals(forge, pr, settings)
        if approval_failure:
            failures.append(approval_failure)
        summary: dict[str, Any] = {
            "render": "pass",
            "policy": "pass" if not report.override else "overridden",
            "signatures": report.signatures.verdict,
            "approvals": f"{len(approved_by)}/{config.approvals_required(settings)}",
        }
        if any(v.severity == "warn" for a in report.apps for v in a.policy.violations):
            summary["policy"] = "warn" if not report.override else "overridden"
        if report.override:
            summary["policy_override"] = {
                k: report.override[k] for k in ("by", "reason", "at") if k in report.override
            }
        apps = [a.name for a in report.apps if a.status != "removed"]
        return GateResult(report, apps, failures, approved_by, summary)

    def _signatures(self, git: Git, base: str, head: str):
        mode = gate_config(git, base).signatures.mode
        trusted = self.desk.config.trusted_keys
        keys = TrustedKeys.load(trusted) if trusted else None
        with SignatureVerifier(
            keys or TrustedKeys.empty(), cache_dir=self.desk.cache_dir / "signatures"
        ) as verifier:
            return verifier.verify(git, base, head, mode)

    def approvals(
        self, forge: Forge, pr: PullRequest, settings: RepoSettings
    ) -> tuple[list[str], str | None]:
        """Who approved the head SHA (not the author, not the bot), and the failure if too few."""
        required = self.desk.config.approvals_required(settings)
        bot = self.desk.bot_login(forge).lower()
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

    def refuse(self, forge: Forge, pr: PullRequest, gates: GateResult, sha: str) -> None:
        """Failure statuses per app and a comment naming the gates: nothing was written."""
        first = gates.failures[0].split(":", 1)[0]
        for app in gates.apps:
            self.desk.status(forge, pr.repo, sha, app, "failure",
                             f"not deployed: {first} gate failed")  # fmt: skip
        forge.create_comment(
            pr, refusal_comment(sha, gates.failures, gates.apps, self.desk.clock())
        )


def gate_config(git: Git, rev: str) -> RepoConfig:
    """``.sluice.yaml`` at ``rev``; an unreadable one counts as the defaults (strictest)."""
    raw = git.read_file(rev, REPO_CONFIG_FILE)
    if raw is None:
        return RepoConfig()
    try:
        return parse_repo_config(raw, REPO_CONFIG_FILE)
    except ConfigError:
        return RepoConfig()  # the preview reports the error; signatures default to "all"


def _check_merge_shape(git: Git, pr: PullRequest, merge: str) -> list[str]:
    parents = git.run("rev-list", "--parents", "-n1", merge).decode().split()[1:]
    if len(parents) == 2 and parents[1] != pr.head_sha:
        return [
            f"merge: the merge commit {merge[:12]} merges {parents[1][:12]}, not the "
            f"reviewed head {pr.head_sha[:12]}"
        ]
    return []


def _with_override(report: Report, override: Any, head_sha: str) -> Report:
    """``apply_override`` for a report computed at the merge commit of that head."""
    merged_at = report.head
    result = apply_override(replace(report, head=head_sha), override)
    result.head = merged_at
    return result


def report_failures(report: Report) -> list[str]:
    """One line per failed gate in ``report`` (config, render, policy, signatures)."""
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

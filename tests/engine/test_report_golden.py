"""Golden texts: the exact Markdown of each comment and reply, reviewed once and
compared byte for byte. Regenerate after an intended change with
``SLUICE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/engine/test_report_golden.py``
and read the diff."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.commands.authz import CommandRule, CommandRules
from bot.commands.help import help_text, unknown_command_reply
from bot.deploy.comments import (
    Outcome,
    deploy_comment,
    drift_comment,
    drift_gone_comment,
    held_comment,
    refusal_comment,
)
from bot.deploy.puller_client import LastResult
from bot.forge.base import Permission
from bot.models import PolicyResult, SignatureReport, Violation
from bot.report import Approvals, CommentContext, render_markdown
from bot.report.escape import code, reply, text
from bot.report.markdown import mark_stale
from tests.engine.test_report import HEAD, app, change, distinct, failing_report, report
from tests.reportkit import check_inert

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
MADE = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)
URL = "https://sluice.example.com/reports/q9kHcVQ2xW0bq0h3bCw0mX3v3hQyq8c4mUGn1pPpTqA"
CTX = CommentContext(
    report_url=URL,
    made_at=MADE,
    approve_policy_who="maintain access or higher, policy owners only: acme/security",
    approvals=Approvals(0, 1, HEAD),
)


def passing():
    return render_markdown(
        report([app("web", [change("web", action="create"), change("cfg")])]), context=CTX
    )


def failing():
    return render_markdown(failing_report(), context=CTX)


def overridden():
    r = failing_report()
    r.signatures = SignatureReport("pass", "all", [])
    r.apps = r.apps[:2]
    r.apps[0].policy.verdict = "warn"
    r.verdict = "warn"
    r.override = {"by": "maya", "reason": "hotfix, tracked in OPS-12", "head": HEAD,
                  "at": "2026-12-05T20:00:00+00:00"}  # fmt: skip
    return render_markdown(r, context=CTX)


def many_apps_one_deny():
    deny = PolicyResult(
        "fail",
        [
            Violation(
                "deny", "no_latest", "image uses :latest", "Deployment", "web", "app-07", new=True
            )
        ],
    )
    apps = [app(f"app-{i:02d}", [distinct(f"app-{i:02d}", i, lines=3)]) for i in range(14)]
    apps[7].policy = deny
    return render_markdown(report(apps, verdict="fail"), context=CTX)


def grouped_and_cut():
    apps = [app(f"svc-{i}", [change("shared", ns=f"svc-{i}")]) for i in range(4)]
    apps.append(app("dash", [change("dashboards", kind="ConfigMap", lines=3_000)]))
    return render_markdown(report(apps), context=CTX, budget=8_000)


def stale():
    body = render_markdown(
        report([app("web", [change("web")])]), context=CommentContext(made_at=MADE)
    )
    return mark_stale(body, "9" * 40)


def help_reply():
    rules = CommandRules(
        commands={"sync": CommandRule(Permission.WRITE, teams=frozenset({"acme/sre"}))},
        policy_owner_teams=frozenset({"acme/security"}),
    )
    return reply("dana", help_text("sluice[bot]", rules))


def error_reply():
    line = "/sync web` @acme/security `*x*"
    return reply("dana", f"{code(line)}: {text('unknown option --now')}")


def unknown_reply():
    return reply("dana", unknown_command_reply("/dif"))


def deploy():
    ok = LastResult("a" * 40, None, "deploy", 7, "succeeded", "Healthy", updated=2, duration_s=3.2)
    bad = LastResult(
        "a" * 40, None, "deploy", 7, "failed", "Degraded", message="apply failed: @acme/x <b>"
    )
    return deploy_comment(
        "### 🚀 Deployed", " by @\u200bmaya", [Outcome("web", ok), Outcome("api", bad)], []
    )


def deploying():
    rows = [Outcome(app, None, deploying="a" * 40) for app in ("web", "api")]
    return deploy_comment(
        "### 🚀 Sluice deploy of `aaaaaaaaaaaa`", " (ledger commit `ffffffffffff`)", rows, []
    )


def drift():
    items = [{"kind": "Deployment", "namespace": "web-staging", "name": "web", "action": "update",
              "diff": "@@ -1 +1 @@\n-replicas: 2\n+replicas: 5\n"}]  # fmt: skip
    return drift_comment("web-staging", "b" * 40, items, MADE)


def drift_gone():
    return drift_gone_comment("web-staging", "b" * 40, MADE)


def held():
    return held_comment(
        "c" * 40, ["`web` is pinned by /rollback: this merge is not deployed."], MADE
    )


def refusal():
    failures = [f"policy: {code(f'app-{i}')}: 1 unapproved deny violation" for i in range(12)]
    return refusal_comment("d" * 40, failures, ["app-0", "app-1"], MADE)


CASES = {
    "passing": passing,
    "failing": failing,
    "overridden": overridden,
    "many-apps-one-deny": many_apps_one_deny,
    "grouped-and-cut": grouped_and_cut,
    "stale": stale,
    "reply-help": help_reply,
    "reply-command-error": error_reply,
    "reply-unknown-command": unknown_reply,
    "deploy": deploy,
    "deploy-in-progress": deploying,
    "drift": drift,
    "drift-gone": drift_gone,
    "held": held,
    "gate-refusal": refusal,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    body = CASES[name]()
    path = GOLDEN / f"{name}.md"
    if os.environ.get("SLUICE_UPDATE_GOLDEN"):
        path.write_text(body)
    assert path.exists(), f"no golden file {path}; run with SLUICE_UPDATE_GOLDEN=1"
    assert body == path.read_text(), f"{name} differs from {path}"
    check_inert(body, addressee="dana" if name.startswith("reply") else None)

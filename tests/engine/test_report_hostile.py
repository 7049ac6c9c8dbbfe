"""A hostile corpus through every reply and comment builder: each result, rendered by a
real CommonMark parser, has no live mention, no raw tag, no broken table and no block
closed early."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.commands.help import unknown_command_reply
from bot.deploy.comments import (
    Outcome,
    deploy_comment,
    drift_comment,
    held_comment,
    outcomes_line,
)
from bot.deploy.live_diff import LiveDiff
from bot.deploy.live_report import render_live_section
from bot.deploy.puller_client import LastResult
from bot.models import (
    AppReport,
    CommitCheck,
    ObjectChange,
    PolicyResult,
    Report,
    SignatureReport,
    Violation,
)
from bot.report import CommentContext, render_markdown
from bot.report.escape import code, reply, text
from tests.reportkit import check_inert

CORPUS = [
    "``` x ```` y `",
    "</details></summary><details>",
    "a | b || c",
    "<!-- sluice:report -->",
    "@acme/security @dana",
    '<img src=x onerror="alert(1)">',
    "x" * 5_000,
    "web\u202etxt.exe",
    "/sync web` @acme/security `*x*",
    "[click](javascript:alert(1)) ![i](http://x/i.png)",
]


def hostile_report(s: str) -> Report:
    change = ObjectChange("update", "v1", s[:300], s[:300], s[:300], f"@@\n-{s}\n+{s}\n")
    v = Violation("deny", s, s, s, s, s, new=True)
    sig = SignatureReport(
        "fail", "all", [CommitCheck("a" * 40, "untrusted", "gpg", s, s, subject=s, author=s)]
    )
    apps = [
        AppReport(
            s[:200],
            s,
            "plain",
            "changed",
            changes=[change],
            policy=PolicyResult("fail", [v, Violation("warn", s, s)]),
        ),
        AppReport(s[:100] + "2", s, "plain", "error", error=s),
    ]
    return Report("b" * 40, "c" * 40, "fail", apps, sig, errors=[s], override=None)


@pytest.mark.parametrize("s", CORPUS, ids=range(len(CORPUS)))
def test_the_report_comment_is_inert(s):
    md = render_markdown(
        hostile_report(s), title=s[:100], context=CommentContext(approve_policy_who=s)
    )
    check_inert(md)
    assert "\u202e" not in md


@pytest.mark.parametrize("s", CORPUS, ids=range(len(CORPUS)))
def test_replies_are_inert_and_mention_only_the_author(s):
    for body in (
        unknown_command_reply(s),
        f"{code(s)}: {text(s)}",
        f"`/diff`: no app named {code(s)} in `.sluice.yaml`.",
    ):
        md = reply("dana", body)
        assert md.startswith("@dana\n\n")
        check_inert(md, addressee="dana")
    check_inert(reply(s, "ok"))  # a login that is not one is not a mention


@pytest.mark.parametrize("s", CORPUS, ids=range(len(CORPUS)))
def test_deploy_hold_drift_and_live_comments_are_inert(s):
    result = LastResult(
        revision="d" * 40, ledger_commit=None, action="deploy", pr=1, result=s[:300],
        health=s[:50], updated=1, message=s,
    )  # fmt: skip
    check_inert(deploy_comment("### Deploy", "", [Outcome(s[:100], result)], [text(s)]))
    check_inert(held_comment("e" * 40, [text(s)], datetime(2026, 12, 5, tzinfo=UTC)))
    check_inert(
        reply("dana", f"`/sync`: {outcomes_line([Outcome(s[:100], result)])}"), addressee="dana"
    )
    pending = Outcome(s[:100], None, problem=s)
    check_inert(deploy_comment(f"### {code(s[:50])}", "", [pending], []))
    drift = [
        {
            "kind": s[:100],
            "namespace": s[:100],
            "name": s[:100],
            "action": s[:50],
            "diff": f"-{s}\n+{s}\n",
        }
    ]
    check_inert(drift_comment(s[:100], "f" * 40, drift, datetime(2026, 12, 5, tzinfo=UTC)))
    change = ObjectChange("update", "v1", s[:100], s[:100], s[:100], f"@@\n-{s}\n")
    check_inert(render_live_section([LiveDiff(s[:100], (change,), None), LiveDiff("x", (), s)]))

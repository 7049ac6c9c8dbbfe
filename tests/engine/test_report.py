from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from bot.models import (
    AppReport,
    CommitCheck,
    ObjectChange,
    PolicyResult,
    Report,
    SignatureReport,
    Violation,
)
from bot.report import MARKER, Approvals, CommentContext, forge_budget, render_markdown, to_json
from tests.reportkit import check_inert

BASE = "abc1234" + "0" * 33
HEAD = "def5678" + "f" * 33
BUDGET = 65_536
INJECTION = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def change(name: str, *, action="update", kind="Deployment", ns="web", lines=3) -> ObjectChange:
    body = "".join(f"-  old{i}: {name}\n+  new{i}: {name}\n" for i in range(lines))
    diff = f"--- a/{kind}/{ns}/{name}\n+++ b/{kind}/{ns}/{name}\n@@ -1,{lines} +1,{lines} @@\n"
    return ObjectChange(action, "apps/v1", kind, ns, name, diff + body)


def app(name: str, changes=(), *, status="changed", policy=None, error=None) -> AppReport:
    return AppReport(
        name=name,
        path=f"apps/{name}",
        renderer="kustomize",
        status=status,
        error=error,
        changes=list(changes),
        policy=policy or PolicyResult(),
    )


def report(apps, *, verdict="pass", signatures=None, errors=()) -> Report:
    return Report(
        base=BASE,
        head=HEAD,
        verdict=verdict,
        apps=list(apps),
        signatures=signatures
        or SignatureReport("pass", "all", [CommitCheck(HEAD, "valid", "gpg")]),
        errors=list(errors),
    )


def code_blocks(markdown: str) -> tuple[list[tuple[str, str]], list[str]]:
    """CommonMark backtick fences: (info, body) per block, and the lines outside blocks.
    Fails if a block is left open."""
    blocks: list[tuple[str, str]] = []
    outside: list[str] = []
    fence = None
    info = ""
    body: list[str] = []
    for line in markdown.split("\n"):
        if fence is None:
            m = re.match(r"^(`{3,})([^`]*)$", line)
            if m:
                fence, info, body = m.group(1), m.group(2), []
            else:
                outside.append(line)
        elif re.match(rf"^ {{0,3}}`{{{len(fence)},}}\s*$", line):
            blocks.append((info, "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    assert fence is None, "a code block is left open"
    return blocks, outside


def prose(markdown: str) -> str:
    """The text outside code blocks and inline code spans: where HTML would render."""
    _, outside = code_blocks(markdown)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", "\n".join(outside))


def assert_well_formed(markdown: str, budget: int = BUDGET) -> None:
    assert markdown.startswith(MARKER + "\n")
    code_blocks(markdown)
    check_inert(markdown, budget=budget)


def section(markdown: str, heading: str) -> str:
    """The text under ``heading`` up to the next ``###`` heading."""
    start = markdown.index(heading)
    end = markdown.find("\n### ", start + len(heading))
    return markdown[start : end if end != -1 else None]


URL = "https://sluice.example.com/reports/T0k3n"
CTX = CommentContext(report_url=URL)


# --- JSON ----------------------------------------------------------------------------


def test_json_report_has_the_documented_shape_and_is_stable():
    violation = Violation(
        "deny", "deny_latest", "uses :latest", "Deployment", "web", "web", new=True
    )
    r = report(
        [app("web-prod", [change("web")], policy=PolicyResult("fail", [violation]))],
        verdict="fail",
        errors=["something broke"],
    )
    text = to_json(r)
    data = json.loads(text)
    assert data == r.to_dict()
    assert list(data) == ["base", "head", "verdict", "apps", "signatures", "errors"]
    assert data["apps"][0]["changes"][0]["action"] == "update"
    assert data["apps"][0]["policy"]["violations"][0]["rule"] == "deny_latest"
    assert data["apps"][0]["policy"]["violations"][0]["new"] is True
    assert set(data["signatures"]["commits"][0]) >= {"sha", "status", "subject", "author"}
    assert text == to_json(r)


# --- headline and layout -------------------------------------------------------------


@pytest.mark.parametrize(
    "verdict,expected",
    [
        ("pass", "✅ **Sluice preview: passed** for `abc1234`…`def5678`"),
        ("warn", "⚠️ **Sluice preview: passed with warnings** for `abc1234`…`def5678`"),
        ("error", "🛑 **Sluice preview: error** for `abc1234`…`def5678`"),
    ],
)
def test_headline_per_verdict(verdict, expected):
    md = render_markdown(report([app("web", [change("a")])], verdict=verdict))
    assert md.split("\n")[1] == expected


def test_failed_headline_names_the_failed_gates():
    deny = PolicyResult("fail", [Violation("deny", "r", "m")])
    bad_sig = SignatureReport("fail", "all", [CommitCheck(HEAD, "unsigned", "none")])
    md = render_markdown(report([app("web", policy=deny)], verdict="fail", signatures=bad_sig))
    assert md.split("\n")[1] == (
        "❌ **Sluice preview: policy and signatures failed** for `abc1234`…`def5678`"
    )


def failing_report() -> Report:
    deny = PolicyResult(
        "fail",
        [
            Violation("deny", "no_latest", "uses :latest", "Deployment", "web", "web", new=True),
            Violation("deny", "no_root", "runs as root", "Deployment", "web", "old", new=False),
            Violation("deny", "no_priv", "privileged", "Deployment", "web", "cfg", new=False),
        ],
    )
    warn = PolicyResult(
        "warn", [Violation("warn", "limits", "no limits", "Deployment", "api", "api")]
    )
    sig = SignatureReport(
        "fail",
        "all",
        [
            CommitCheck(HEAD, "valid", "gpg"),
            CommitCheck(
                "1234567" + "0" * 33,
                "untrusted",
                "gpg",
                "Eve <eve@example.com>",
                "0123456789ABCDEF0123456789ABCDEF01234567",
                subject="Add web",
                author="Eve <eve@example.com>",
            ),  # fmt: skip
            CommitCheck("7654321" + "0" * 33, "unsigned", "none", subject="Fix", author="Bo"),
        ],
    )
    return report(
        [
            app("web", [change("web"), change("cfg", kind="Deployment")], policy=deny),
            app("api", [change("api", action="create")], policy=warn),
            app("broken", status="error", error="kustomize: accumulating resources"),
        ],
        verdict="fail",
        signatures=sig,
    )


def test_layout_puts_what_blocks_first_then_next_steps_summary_changes_warnings():
    md = render_markdown(failing_report(), context=CTX)
    assert_well_formed(md)
    order = [
        "❌ **Sluice preview",
        "### What blocks this PR",
        "**Errors**",
        "**Policy denies**",
        "**Signature problems**",
        "### Next steps",
        "### Summary",
        "### Changes",
        "### Warnings",
        "[Full report](" + URL + ")",
    ]
    positions = [md.index(marker) for marker in order]
    assert positions == sorted(positions)


def test_new_and_existing_violations_are_marked():
    md = render_markdown(failing_report())
    denies = section(md, "### What blocks this PR")
    assert "| `web` | `no_latest` | `Deployment web/web` | uses :latest | 🆕 new |" in denies
    # already on the base, but this PR changes the object: it reads as the PR's
    assert (
        "| `web` | `no_priv` | `Deployment web/cfg` | privileged | existing, object changed |"
        in denies
    )
    assert (
        "| `web` | `no_root` | `Deployment web/old` | runs as root | existing on base |" in denies
    )
    # the PR's own denies come first
    assert denies.index("no_latest") < denies.index("no_priv") < denies.index("no_root")


def test_an_app_that_did_not_render_has_policy_not_evaluated():
    md = render_markdown(failing_report())
    assert "| `broken` | error | — | ⏭️ not evaluated |" in md
    assert "✅ pass" not in section(md, "### Summary")


def test_summary_leaves_zero_counts_out():
    r = report([app("web", [change("a", action="create"), change("b"), change("c")])])
    md = render_markdown(r)
    assert "| `web` | changed | 1 created, 2 updated | ✅ pass |" in md
    assert "0 deleted" not in md and "<code>web</code>: 1 created, 2 updated</summary>" in md


def test_signature_problems_show_subject_author_and_key():
    md = render_markdown(failing_report())
    sig = section(md, "**Signature problems**")
    assert "| `1234567` | Add web | Eve &lt;eve@\u200bexample.com&gt; | untrusted | gpg " in sig
    assert "`0123456789ABCDEF0123456789ABCDEF01234567`" in sig
    assert "| `7654321` | Fix | Bo | unsigned | — |" in sig
    assert "`" + HEAD[:7] + "`" not in sig  # valid commits are not problems


def test_next_steps_say_what_unblocks_the_pr():
    ctx = CommentContext(
        approve_policy_who="maintain access or higher, policy owners only",
        approvals=Approvals(0, 1, HEAD),
    )
    steps = section(render_markdown(failing_report(), context=ctx), "### Next steps")
    assert "`/approve-policy <reason>` (maintain access or higher, policy owners only)" in steps
    assert "Re-sign with a trusted key and force-push: `1234567` Add web, `7654321` Fix." in steps
    assert f"Approvals needed for merge: 1 of 1, for `{HEAD[:12]}` (approvals" in steps


def test_override_is_shown_on_the_denies_with_who_when_and_why():
    r = failing_report()
    r.signatures = SignatureReport("pass", "all", [CommitCheck(HEAD, "valid", "gpg")])
    r.apps = r.apps[:2]
    r.apps[0].policy.verdict = "warn"
    r.verdict = "warn"
    r.override = {"by": "lead", "reason": "hotfix <img src=x>", "head": HEAD,
                  "at": "2026-12-05T20:00:00+00:00"}  # fmt: skip
    md = render_markdown(r)
    assert_well_formed(md)
    assert "### Accepted by a policy owner" in md and "What blocks" not in md
    assert "overridden by @\u200blead at 2026-12-05T20:00:00Z: hotfix &lt;img src=x&gt;" in md
    assert "| `web` | changed | 2 updated | 🔓 overridden |" in md
    assert "/approve-policy" not in md


def test_freshness_names_the_head_being_previewed_and_when_the_comment_was_made():
    ctx = CommentContext(previewing="9" * 40, made_at=datetime(2026, 12, 5, 21, 0, tzinfo=UTC))
    md = render_markdown(report([app("web", [change("a")])]), context=ctx)
    assert md.split("\n")[1].startswith(
        "> ⏳ **Out of date:** Sluice is previewing the new head `9999999`"
    )
    assert md.rstrip().endswith("made 2026-12-05 21:00:00 UTC for `def5678`</sub>")


def test_no_apps_says_so():
    md = render_markdown(report([]))
    assert_well_formed(md)
    assert "No app is affected by this change." in md


def test_extra_paragraphs_come_before_the_footer():
    md = render_markdown(report([]), extra=["Commands: `/diff`, `/sync`"], title="Sluice diff")
    assert "Commands: `/diff`, `/sync`\n\n<sub>" in md


def test_near_identical_diffs_are_grouped_with_one_diff_and_the_names():
    apps = [app(f"svc-{i}", [change("shared", ns=f"svc-{i}")]) for i in range(38)]
    md = render_markdown(report(apps))
    assert_well_formed(md)
    assert "**The same change in 38 Deployments** (update): `Deployment svc-0/shared (svc-0)`" in md
    assert all(f"`Deployment svc-{i}/shared (svc-{i})`" in md for i in range(38))
    blocks, _ = code_blocks(md)
    assert len([b for info, b in blocks if info == "diff"]) == 1
    assert "--- a/" not in md and "+++ b/" not in md


# --- size ----------------------------------------------------------------------------


def test_forge_budgets():
    assert forge_budget("github") == 65_536
    assert forge_budget("gitlab") == 1_000_000


def distinct(name: str, salt: int, lines: int = 40) -> ObjectChange:
    """A change whose diff is unlike any other's (no grouping)."""
    body = "".join(f"-  v{i}: {salt * 7 + i}\n+  v{i}: {salt * 11 + i}\n" for i in range(lines))
    return ObjectChange("update", "apps/v1", "Deployment", "web", name, f"@@ -1 +1 @@\n{body}")


def huge_report() -> Report:
    apps = [
        app(f"app-{a:02d}", [distinct(f"obj-{a:02d}-{o:02d}", a * 30 + o) for o in range(30)])
        for a in range(40)
    ]
    return report(apps)


@pytest.mark.parametrize("budget", [3_000, 10_000, 30_000, 65_536])
def test_budgets_are_respected_and_every_left_out_object_is_named(budget):
    r = huge_report()
    md = render_markdown(r, budget=budget, context=CTX)
    assert_well_formed(md, budget)
    m = re.search(
        r"\*\*([\d,]+) object diffs left out for size\*\*, all in the \[full report\]", md
    )
    assert m, "the comment must say what it left out"
    left_out = int(m.group(1).replace(",", ""))
    shown = [c for a in r.apps for c in a.changes if f"**update** `Deployment web/{c.name}`" in md]
    assert left_out == 1_200 - len(shown)
    named = re.findall(
        r"`Deployment web/(obj-\d+-\d+)` in `app-\d+`", md.split("left out for size")[1]
    )
    counted = re.search(r"and ([\d,]+) more\.", md)
    assert len(named) + (int(counted.group(1).replace(",", "")) if counted else 0) == left_out
    if budget == 65_536:
        assert len(md) > budget - 5_000, "it uses the room it has"


def test_an_oversized_diff_is_cut_in_place_at_a_line_boundary():
    giant = change("dashboards", kind="ConfigMap", lines=5_000)
    r = report([app("web", [giant, change("small")])])
    md = render_markdown(r, context=CTX)
    assert_well_formed(md)
    assert (
        "**update** `ConfigMap web/dashboards`" in md and "**update** `Deployment web/small`" in md
    )
    m = re.search(r"_… ([\d,]+) more lines of 10,001 cut here; the whole diff is in the \[full", md)
    assert m
    blocks, _ = code_blocks(md)
    kept = next(b for _, b in blocks if "dashboards" in b)
    assert giant.diff.split("@@\n", 1)[0] not in kept  # ---/+++ headers dropped
    assert ("@@" + giant.diff.split("@@", 1)[1]).startswith(kept), "cut mid-line or reordered"
    assert kept.count("\n") + int(m.group(1).replace(",", "")) == 10_001


def test_a_1500_app_pr_with_one_deny_shows_its_row_and_violation():
    deny = PolicyResult(
        "fail",
        [Violation("deny", "no_latest", "uses :latest", "Deployment", "web", "app-0777", new=True)],
    )
    apps = [app(f"app-{i:04d}", [distinct(f"app-{i:04d}", i, lines=20)]) for i in range(1_500)]
    apps[777].policy = deny
    r = report(apps, verdict="fail")
    md = render_markdown(r, context=CTX)
    assert_well_formed(md)
    blocks_part = section(md, "### What blocks this PR")
    assert (
        "| `app-0777` | `no_latest` | `Deployment web/app-0777` | uses :latest | 🆕 new |"
        in blocks_part
    )
    summary = section(md, "### Summary")
    visible = summary.split("<details>")[0]
    assert "| `app-0777` | changed | 1 updated | ❌ deny |" in visible
    assert (
        "<details><summary>1,499 passing or unchanged apps (1,499 with changes)</summary>"
        in summary
    )
    changes = section(md, "### Changes")
    assert changes.startswith("### Changes\n\n<details><summary><code>app-0777</code>"), (
        "its diff first"
    )
    assert re.search(
        r"\*\*1,4\d\d object diffs left out for size\*\*, all in the \[full report\]", md
    )
    assert re.search(r"and [\d,]+ more\.\n", changes), "what cannot be named is counted"


def test_thousands_of_denies_are_cut_with_a_count_and_a_link():
    many = [Violation("deny", f"rule_{i}", "x" * 200, "Pod", "web", f"p{i}") for i in range(2_000)]
    r = report([app("web", [change("a")], policy=PolicyResult("fail", many))], verdict="fail")
    md = render_markdown(r, context=CTX)
    assert_well_formed(md)
    m = re.search(
        r"_… ([\d,]+) more deny violations not shown here: all in the \[full report\]", md
    )
    assert m and 0 < int(m.group(1).replace(",", "")) < 2_000
    assert "| `web` | changed | 1 updated | ❌ deny |" in md


def test_too_small_budget_is_refused():
    with pytest.raises(ValueError, match="at least"):
        render_markdown(report([]), budget=100)


# --- escaping ------------------------------------------------------------------------


def test_diff_containing_fences_cannot_break_out_of_its_block():
    body = "@@ -1 +1 @@\n-```\n+````\n+</details>\n"
    r = report([app("web", [ObjectChange("update", "v1", "ConfigMap", "web", "c", body)])])
    md = render_markdown(r)
    assert_well_formed(md)
    blocks, _ = code_blocks(md)
    assert ("diff", body) in blocks


def test_html_markdown_mentions_and_bidi_in_names_and_messages_are_inert():
    evil = f"x|y`z @acme/security {INJECTION} [a](javascript:x) \u202eevil"
    v = Violation("deny", evil, evil, evil, evil, evil)
    r = report(
        [
            app(
                evil,
                [ObjectChange("update", "v1", evil, evil, evil, "@@\n+a\n")],
                policy=PolicyResult("fail", [v]),
                error=None,
            )
        ],
        verdict="fail",
        errors=[evil],
    )
    md = render_markdown(r, title=f"Preview {INJECTION}")
    assert_well_formed(md)
    assert "\u202e" not in md and "‹U+202E›" in md


def test_report_is_deterministic():
    r = huge_report()
    assert render_markdown(r) == render_markdown(r)


def test_text_from_a_repository_cannot_become_a_link_or_a_block():
    from bot.report.escape import text

    assert text("see https://evil.example/x or www.evil.example") == (
        "see https\\://evil.example/x or www\\.evil.example"
    )
    assert text("- item") == "\\- item" and text("1. one") == "1\\. one"
    assert text("# title") == "\\# title" and text("a - b. c") == "a - b. c"
    assert text("[x](javascript:y) ![i](z)") == "\\[x\\](javascript:y) \\!\\[i\\](z)"


def test_approvals_given_for_the_head_are_said_and_none_required_is_silent():
    done = render_markdown(report([]), context=CommentContext(approvals=Approvals(1, 1, HEAD)))
    assert f"- Approvals for merge: 1 of 1 given, for `{HEAD[:12]}`." in done
    silent = render_markdown(report([]), context=CommentContext(approvals=Approvals(0, 0, HEAD)))
    assert "Approvals" not in silent and "### Next steps" not in silent

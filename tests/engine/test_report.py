from __future__ import annotations

import json
import re

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
from bot.report import MARKER, render_markdown, to_json

BASE = "abc1234" + "0" * 33
HEAD = "def5678" + "f" * 33
BUDGET = 65_000
ALLOWED_TAGS = {"details", "/details", "summary", "/summary", "code", "/code"}
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
    assert len(markdown) <= budget
    assert markdown.startswith(MARKER + "\n")
    text = prose(markdown)  # what a code block holds is inert
    assert text.count("<details") == text.count("</details>")
    assert text.count("<summary>") == text.count("</summary>")
    for tag in re.findall(r"<(/?[a-zA-Z][a-zA-Z0-9]*)", text):
        assert tag in ALLOWED_TAGS, f"raw HTML tag {tag!r} in the comment"


# --- JSON ----------------------------------------------------------------------------


def test_json_report_has_the_documented_shape_and_is_stable():
    violation = Violation("deny", "deny_latest", "uses :latest", "Deployment", "web", "web")
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
    assert text == to_json(r)
    assert text.startswith('{\n  "base": ')


# --- headline and sections -----------------------------------------------------------


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
    only_policy = render_markdown(report([app("web", policy=deny)], verdict="fail"))
    assert "**Sluice preview: policy failed**" in only_policy


def test_summary_table_counts_per_app_and_signature_verdict():
    changes = [change("a", action="create"), change("b"), change("c"), change("d", action="delete")]
    warn = PolicyResult("warn", [Violation("warn", "w", "m")])
    r = report([app("web", changes, policy=warn), app("api", status="unchanged")], verdict="warn")

    md = render_markdown(r)

    assert "| `web` | changed | 1 | 2 | 1 | ⚠️ warn |" in md
    assert "| `api` | unchanged | 0 | 0 | 0 | ✅ pass |" in md
    assert "**Signatures:** ✅ pass · 1 commit checked (mode `all`)" in md
    assert_well_formed(md)


def test_one_details_section_per_app_with_changes_and_object_headers():
    r = report(
        [
            app("web", [change("w1"), change("cm", action="create", kind="ConfigMap")]),
            app("api", [change("a1", action="delete", ns="api")]),
            app("idle", status="unchanged"),
        ]
    )
    md = render_markdown(r)
    assert md.count("<details>") == 2
    assert "<summary><code>web</code>: 1 created, 1 updated, 0 deleted</summary>" in md
    assert "**update** `Deployment` `web/w1`" in md
    assert "**create** `ConfigMap` `web/cm`" in md
    assert "**delete** `Deployment` `api/a1`" in md
    blocks, _ = code_blocks(md)
    assert [info for info, _ in blocks] == ["diff", "diff", "diff"]
    assert blocks[0][1] == r.apps[0].changes[0].diff
    assert "idle" not in md.split("### Changes")[1]
    assert_well_formed(md)


def test_violations_table_and_signature_problems():
    violations = [
        Violation("warn", "prefer_limits", "no limits", "Deployment", "web", "web"),
        Violation("deny", "deny_latest", "image uses :latest", "Deployment", "web", "web"),
        Violation("deny", "no_ns", "cluster thing", "ClusterRole", None, "admin"),
    ]
    sigs = SignatureReport(
        "fail",
        "all",
        [
            CommitCheck("1" * 40, "valid", "gpg", "Alice <alice@example.com>"),
            CommitCheck("2" * 40, "untrusted", "ssh", "mallory@example.com"),
            CommitCheck("3" * 40, "unsigned", "none"),
        ],
    )
    md = render_markdown(
        report(
            [app("web", policy=PolicyResult("fail", violations))], verdict="fail", signatures=sigs
        )
    )
    rows = [line for line in md.split("\n") if line.startswith("| ❌ deny") or "⚠️ warn |" in line]
    assert rows[0].startswith("| ❌ deny | `web` | `deny_latest` | `Deployment web/web` |")
    assert rows[1].startswith("| ❌ deny | `web` | `no_ns` | `ClusterRole admin` |")
    assert rows[2].startswith("| ⚠️ warn | `web` | `prefer_limits` |")
    assert "| `2222222` | untrusted | ssh | `mallory@example.com` |" in md
    assert "| `3333333` | unsigned | none | — |" in md
    assert "1111111" not in md, "valid commits are not signature problems"
    assert md.index("### Policy violations") < md.index("### Signature problems")
    assert_well_formed(md)


def test_errors_are_shown_before_the_summary():
    r = report(
        [
            app("web", status="error", error="kustomize: accumulating resources: missing.yaml"),
            app("api", [change("x")], policy=PolicyResult("error", error="rego parse error")),
        ],
        verdict="error",
        errors=["head revision: .sluice.yaml: apps[0].path escapes the repo"],
    )
    md = render_markdown(r)
    errors_at = md.index("### 🛑 Errors")
    assert errors_at < md.index("| App | Status")
    assert "**Render error in `web`:**" in md
    assert "**Policy error in `api`:**" in md
    bodies = [body for info, body in code_blocks(md)[0] if info == "text"]
    assert bodies == [
        "head revision: .sluice.yaml: apps[0].path escapes the repo\n",
        "kustomize: accumulating resources: missing.yaml\n",
        "rego parse error\n",
    ]
    assert_well_formed(md)


def test_no_apps_says_so():
    md = render_markdown(report([]))
    assert "No app is affected by this change." in md
    assert "<details" not in md
    assert_well_formed(md)


def test_extra_paragraphs_are_appended():
    md = render_markdown(report([]), extra=["Commands: `/diff`, `/sync`"], title="Sluice diff")
    assert md.rstrip().endswith("Commands: `/diff`, `/sync`")
    assert "**Sluice diff: passed**" in md


# --- budget --------------------------------------------------------------------------


def huge_report() -> Report:
    apps = [
        app(f"app-{a:02d}", [change(f"obj-{a:02d}-{o:02d}", lines=40) for o in range(30)])
        for a in range(40)
    ]
    return report(apps)


def test_huge_report_stays_within_budget_and_cuts_at_object_boundaries():
    r = huge_report()
    total = sum(len(a.changes) for a in r.apps)

    md = render_markdown(r)

    assert_well_formed(md)
    blocks, _ = code_blocks(md)
    all_diffs = {c.diff for a in r.apps for c in a.changes}
    assert blocks and all(body in all_diffs for _, body in blocks), "a diff was cut mid-object"
    shown = len(blocks)
    m = re.search(r"… (\d+) more object diffs in (\d+) apps omitted \(budget\); run `sluice", md)
    assert m, "the comment must say what it left out"
    assert int(m.group(1)) == total - shown
    apps_with_omissions = {
        a.name for a in r.apps if any(f"`web/{c.name}`" not in md for c in a.changes)
    }
    assert int(m.group(2)) == len(apps_with_omissions)
    # The summary still covers every app.
    assert all(f"| `{a.name}` | changed | 0 | 30 | 0 |" in md for a in r.apps)
    # It uses the room it has.
    assert len(md) > BUDGET - 5_000


@pytest.mark.parametrize("budget", [3_000, 10_000, 30_000])
def test_smaller_budgets_are_respected(budget):
    md = render_markdown(huge_report(), budget=budget)
    assert_well_formed(md, budget)
    assert "omitted (budget)" in md


def test_one_oversized_object_does_not_hide_the_rest():
    r = report([app("web", [change("giant", lines=5_000), change("small")])])
    md = render_markdown(r)
    assert_well_formed(md)
    assert "`web/small`" in md and "`web/giant`" not in md
    assert "_… 1 object diff omitted (budget)_" in md
    assert "… 1 more object diff in 1 app omitted (budget)" in md


def test_violations_always_fit_and_are_truncated_with_a_count():
    many = [Violation("deny", f"rule_{i}", "x" * 200, "Pod", "web", f"p{i}") for i in range(2_000)]
    r = report([app("web", [change("a")], policy=PolicyResult("fail", many))], verdict="fail")
    md = render_markdown(r)
    assert_well_formed(md)
    assert "| `web` | changed | 0 | 1 | 0 | ❌ fail |" in md
    shown = md.count("| ❌ deny |")
    assert 100 < shown < 2_000
    assert f"_… {2_000 - shown} more violations not shown (budget); see the JSON report_" in md


def test_too_small_budget_is_refused():
    with pytest.raises(ValueError, match="budget"):
        render_markdown(report([]), budget=100)


# --- escaping ------------------------------------------------------------------------


def test_diff_containing_fences_cannot_break_out_of_its_block():
    # A context line " ```" is a valid closing fence (up to 3 spaces of indent).
    nasty = (
        "--- a/ConfigMap/web/readme\n+++ b/ConfigMap/web/readme\n@@ -1 +1,3 @@\n"
        " ```\n+</details>\n+````` \n   `````\n+<script>alert(1)</script>\n"
    )
    r = report([app("web", [ObjectChange("update", "v1", "ConfigMap", "web", "readme", nasty)])])
    md = render_markdown(r)
    blocks, _ = code_blocks(md)
    assert blocks == [("diff", nasty)]
    assert_well_formed(md)


def test_html_and_markdown_in_names_and_messages_is_escaped():
    violation = Violation("deny", INJECTION, f"bad | {INJECTION} **bold** @octo-org/admins", "Pod")
    r = report(
        [
            app(
                INJECTION,
                [ObjectChange("create", "v1", INJECTION, "ns`x", INJECTION, "+a\n")],
                policy=PolicyResult("fail", [violation]),
                status="changed",
            )
        ],
        verdict="fail",
        signatures=SignatureReport(
            "fail", "all", [CommitCheck(HEAD, "untrusted", "gpg", INJECTION)]
        ),
        errors=[INJECTION],
    )
    md = render_markdown(r, title=f"Preview {INJECTION}")

    assert_well_formed(md)  # includes: no raw HTML tag outside code
    assert "<summary><code>&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in md
    row = next(line for line in md.split("\n") if line.startswith("| ❌ deny"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 6, "a pipe in a message split the table row"
    assert "@octo-org" not in md, "a message must not mention a team"
    assert "**bold**" not in md
    assert "``ns`x/" in md  # a backtick in a name gets a longer code span


def test_report_is_deterministic():
    r = huge_report()
    assert render_markdown(r) == render_markdown(r)


def test_thousands_of_apps_truncate_the_summary_table_with_a_count():
    r = report([app(f"app-{i:04d}", [change("x")]) for i in range(3_000)])
    md = render_markdown(r)
    assert_well_formed(md)
    rows = sum(1 for line in md.split("\n") if line.startswith("| `app-"))
    assert 0 < rows < 3_000
    assert f"_… {3_000 - rows} more apps not shown (budget); see the JSON report_" in md


def test_policy_override_is_shown_and_escaped():
    r = report([app("web", [change("x")])], verdict="pass")
    r.override = {"by": "lead<b>", "reason": f"hotfix {INJECTION}", "head": HEAD, "at": "now"}
    md = render_markdown(r)
    assert "🔓 **Policy override** by `lead<b>` for `def5678`: hotfix &lt;img" in md
    assert_well_formed(md)

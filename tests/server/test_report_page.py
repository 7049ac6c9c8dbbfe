"""The full report page: stored with an unguessable token, served by a real
``sluice serve``, opened in headless Chromium (Playwright) to check that it shows
what the comment left out and that hostile names stay text."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from bot.models import AppReport, ObjectChange, PolicyResult, Report, SignatureReport, Violation
from bot.report import CommentContext, render_markdown
from bot.server.reports import ReportPages, add_report_routes, publish_page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>\u202e'
SCREENSHOT_DIR = os.environ.get("SLUICE_SCREENSHOT_DIR")


def browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("SKIP reason: the playwright package is not installed (pip install -e '.[dev]')")
        pytest.skip("playwright is not installed")
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no browser at {CHROMIUM}: CI must run the report page's browser tests")
        print(f"SKIP reason: no browser at {CHROMIUM} (apt-get install -y chromium; .ci/run does)")
        pytest.skip(reason=f"no Chromium at {CHROMIUM}")
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = browser_or_skip()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Served:
    url: str


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The report routes of the bot's Flask app over real HTTP on 127.0.0.1."""
    pages = ReportPages(tmp_path_factory.mktemp("serve") / "reports.sqlite3")
    app = Flask("sluice-test")
    add_report_routes(app, pages)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield Served(f"http://127.0.0.1:{http.server_port}"), pages
    http.shutdown()
    thread.join(10)


def _seed(name: str) -> int:
    return len(name) * 1000 + sum(map(ord, name))


def big_report() -> Report:
    def change(name: str, lines: int) -> ObjectChange:
        seed = _seed(name)  # distinct diffs: nothing is grouped
        body = "".join(f"-  key{i}: {seed}-{i}\n+  key{i}: {seed}-{i}-new\n" for i in range(lines))
        return ObjectChange("update", "v1", "ConfigMap", "web", name, f"@@ -1 +1 @@\n{body}")

    deny = Violation("deny", "no_html", f"message {HOSTILE}", "ConfigMap", "web", HOSTILE, new=True)
    apps = [
        AppReport(
            "web",
            "apps/web",
            "plain",
            "changed",
            changes=[change("dashboards", 4_000), change(HOSTILE, 3)]
            + [change(f"cm-{i}", 30) for i in range(60)],
            policy=PolicyResult("fail", [deny]),
        )
    ]
    return Report("a" * 40, "b" * 40, "fail", apps, SignatureReport("skipped", "off"))


def test_the_page_shows_what_the_comment_left_out_and_runs_no_hostile_markup(browser, server):
    srv, pages = server
    report = big_report()
    ctx = publish_page(
        pages,
        srv.url,
        report,
        title="Sluice",
        context=CommentContext(made_at=datetime.now(UTC)),
    )
    assert ctx.report_url and ctx.report_url.startswith(f"{srv.url}/reports/")
    comment = render_markdown(report, context=ctx, budget=20_000)
    assert f"[full report]({ctx.report_url})" in comment
    left_out = comment.split("left out for size**")[1]
    omitted = re.findall(r"`ConfigMap web/(cm-\d+)`", left_out)
    assert omitted, "the comment must have left something out for this test to mean anything"

    dialogs = []
    page = browser.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    response = page.goto(ctx.report_url)
    assert response.status == 200
    assert "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    body = page.inner_text("body")
    for name in omitted:
        assert f"ConfigMap web/{name}" in body
        seed = len(name) * 1000 + sum(map(ord, name))
        assert f"key29: {seed}-29-new" in body  # its whole diff, not just its name
    seed = len("dashboards") * 1000 + sum(map(ord, "dashboards"))
    assert f"key3999: {seed}-3999-new" in body, "the oversized diff is whole on the page"
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("img").count() == 0 and page.locator("body script").count() == 0
    assert "<img src=x" in body, "hostile text is shown as text"
    assert "‹U+202E›" in body and "\u202e" not in body
    assert not dialogs
    assert page.locator("#app-0-web").count() == 1
    page.click("a[href='#app-0-web']")
    assert page.locator("span.add").first.evaluate("e => getComputedStyle(e).backgroundColor") != (
        page.locator("span.del").first.evaluate("e => getComputedStyle(e).backgroundColor")
    )
    assert '"verdict": "fail"' in page.inner_text("#json + pre")
    if SCREENSHOT_DIR:
        page.set_viewport_size({"width": 1100, "height": 1400})
        page.goto(ctx.report_url)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "report-page.png"))
    page.close()


def test_unknown_and_expired_tokens_are_404(server):
    srv, pages = server
    old = pages.put("<p>old</p>", "{}", datetime.now(UTC) - timedelta(days=400))
    assert requests.get(f"{srv.url}/reports/{old.token}", timeout=10).status_code == 404
    fresh = pages.put("<p>fresh</p>", '{"a": 1}', datetime.now(UTC))
    assert requests.get(f"{srv.url}/reports/{fresh.token}", timeout=10).status_code == 200
    got = requests.get(f"{srv.url}/reports/{fresh.token}.json", timeout=10)
    assert got.json() == {"a": 1}
    guess = fresh.token[:-1] + ("A" if fresh.token[-1] != "A" else "B")
    assert requests.get(f"{srv.url}/reports/{guess}", timeout=10).status_code == 404
    assert requests.get(f"{srv.url}/reports/", timeout=10).status_code == 404


def test_tokens_are_long_random_and_pages_expire(tmp_path):
    pages = ReportPages(tmp_path / "r.sqlite3", retention=timedelta(days=1))
    now = datetime(2026, 12, 5, tzinfo=UTC)
    tokens = {pages.put("x", "{}", now).token for _ in range(50)}
    assert len(tokens) == 50 and all(len(t) == 43 for t in tokens)
    assert pages.get(next(iter(tokens)), now + timedelta(hours=23)) is not None
    assert pages.expire(now + timedelta(days=2)) == 50
    assert pages.get(next(iter(tokens)), now) is None

"""The full report page end to end: a real ``sluice serve`` with ``SLUICE_PUBLIC_URL``
stores each preview's page, links it from the PR comment and from every commit status,
and serves it to anyone holding the link; a new push marks the old comment out of date."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests

from bot.forge.base import RepoRef
from bot.forge.github import GitHubForge
from bot.forge.retry import Retrier
from bot.report import MARKER
from bot.server.reports import mark_report_stale
from tests.botkit import GH_TOKEN, GitOpsRepo, SluiceServer, build_gitops_repo, server_env, wait_for
from tests.emulators import github as ghemu
from tests.reportkit import check_inert

pytestmark = pytest.mark.timeout(120)
BOT = "sluice-bot"
REPO = "acme/pages"


@pytest.fixture(scope="module")
def gitops(tmp_path_factory: pytest.TempPathFactory) -> GitOpsRepo:
    return build_gitops_repo(tmp_path_factory.mktemp("gitops"))


@pytest.fixture(scope="module")
def served(tmp_path_factory, gitops) -> Iterator[tuple[ghemu.GitHubEmulator, SluiceServer]]:
    work = tmp_path_factory.mktemp("pages-stack")
    gh = ghemu.GitHubEmulator(bot_login=BOT, bot_token=GH_TOKEN).start()
    server = SluiceServer(server_env(work / "data", github_url=gh.base_url, keys=gitops.keys),
                          work / "serve.log")  # fmt: skip
    server.env["SLUICE_PUBLIC_URL"] = server.url + "/"
    try:
        yield gh, server.start()
    finally:
        server.stop()
        gh.stop()


def test_every_preview_links_its_full_report_page(served, gitops):
    gh, server = served
    gh.add_repo(REPO, clone_url=gitops.clone_url)
    pull = gh.add_pull(REPO, number=1, base_sha=gitops.sha["main"], head_ref="deny",
                       head_sha=gitops.sha["deny"])  # fmt: skip
    assert server.github("pull_request", gh.pull_request_event(REPO, 1)).status_code == 202

    def settled():
        final = {s.context: s for s in gh.statuses(REPO, pull.head_sha)}
        return (
            final if len(final) == 3 and all(s.state != "pending" for s in final.values()) else None
        )

    statuses = wait_for(settled, 60, "final statuses")
    (report,) = [c for c in gh.comments(REPO, 1) if c.author == BOT and MARKER in c.body]
    link = re.search(
        r"\[Full report\]\((http://127\.0\.0\.1:\d+/reports/[A-Za-z0-9_-]{43})\)", report.body
    )
    assert link, report.body[-500:]
    url = link.group(1)
    assert {s.target_url for s in statuses.values()} == {url}, "every status links the page"
    assert re.search(r"made \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC for `[0-9a-f]{7}`", report.body)
    check_inert(report.body)

    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "deny_latest_tag" in page.text and 'id="app-0-' in page.text
    assert requests.get(url + ".json", timeout=10).json()["head"] == pull.head_sha
    assert requests.get(url[:-4] + "AAAA", timeout=10).status_code == 404

    # While a new head is previewed, the old comment says so at its top.
    forge = GitHubForge(base_url=gh.base_url, token=GH_TOKEN,
                        retrier=Retrier(attempts=2, sleep=lambda _s: None))  # fmt: skip
    with gh._lock:
        pull.head_sha = gitops.sha["deny2"]
    pr = forge.get_pull_request(RepoRef("github", REPO, gitops.clone_url), 1)
    mark_report_stale(forge, pr, BOT)
    (stale,) = [c for c in gh.comments(REPO, 1) if c.author == BOT and MARKER in c.body]
    assert stale.id == report.id
    first = stale.body.split("\n")[1]
    assert first.startswith(
        f"> ⏳ **Out of date:** Sluice is previewing the new head `{gitops.sha['deny2'][:7]}`"
    )
    assert f"this report is for `{gitops.sha['deny'][:7]}`" in first


def test_hostile_command_lines_get_inert_replies_from_a_real_server(served, gitops):
    """Errors are answered before any permission check, so anyone can try this."""
    gh, server = served
    if REPO not in gh._repos:
        gh.add_repo(REPO, clone_url=gitops.clone_url)
    gh.add_pull(REPO, number=2, base_sha=gitops.sha["main"], head_ref="clean",
                head_sha=gitops.sha["clean"])  # fmt: skip
    lines = [
        "/sync web` @acme/security `*x*",
        "/rollback --to `x` @acme/sec <img src=x onerror=alert(1)>",
        "/frobnicate @acme/security </details> | <!-- sluice:report --> \u202e",
    ]
    comment_id = gh.add_comment(REPO, 2, "\n".join(lines), author="mallory")
    payload = gh.issue_comment_event(REPO, comment_id)
    assert server.github("issue_comment", payload).status_code == 202

    def replies():
        found = [c for c in gh.comments(REPO, 2) if c.author == BOT]
        return found if len(found) >= len(lines) else None

    for reply in wait_for(replies, 60, "a reply per command line"):
        assert reply.body.startswith("@mallory\n\n")
        check_inert(reply.body, addressee="mallory")
        assert "\u202e" not in reply.body

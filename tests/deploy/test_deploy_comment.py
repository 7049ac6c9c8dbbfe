"""One deploy comment per merge, edited in place as the puller reports, through the real
GitHub client against the emulator."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.deploy.comments import Outcome, deploy_comment, update_deploy_row, upsert_deploy_comment
from bot.deploy.puller_client import LastResult
from bot.forge.base import RepoRef
from bot.forge.github import GitHubForge
from bot.forge.retry import Retrier
from tests.emulators.github import GitHubEmulator
from tests.reportkit import check_inert

REPO = "acme/gitops"
MERGE = "c" * 40
T0 = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)
T1 = datetime(2026, 12, 5, 21, 5, tzinfo=UTC)


def result(message: str = "", ok: bool = True) -> LastResult:
    return LastResult(MERGE, "d" * 40, "deploy", 1, "succeeded" if ok else "failed",
                      "Healthy" if ok else "Degraded", updated=2, message=message)  # fmt: skip


def test_a_late_puller_result_edits_the_merge_comment_instead_of_adding_one():
    with GitHubEmulator(bot_login="sluice-bot") as gh:
        gh.add_repo(REPO, clone_url="/nonexistent")
        gh.add_pull(REPO, number=1, merged=True, merge_commit_sha=MERGE)
        forge = GitHubForge(base_url=gh.base_url, token=gh.bot_token,
                            retrier=Retrier(attempts=2, sleep=lambda _s: None))  # fmt: skip
        pr = forge.get_pull_request(RepoRef("github", REPO, "/nonexistent"), 1)
        waiting = [Outcome("web", None, problem="timed out waiting for the puller"),
                   Outcome("api", result())]  # fmt: skip
        title = f"### 🚀 Sluice deploy of `{MERGE[:12]}`"
        upsert_deploy_comment(
            forge, pr, MERGE, deploy_comment(title, "", waiting, []), "sluice-bot", T0
        )
        upsert_deploy_comment(
            forge, pr, MERGE, deploy_comment(title, "", waiting, []), "sluice-bot", T0
        )
        (first,) = [c for c in forge.list_comments(pr)]
        assert "| `web` | ⏳ timed out waiting for the puller |" in first.body
        assert first.body.rstrip().endswith("<sub>made 2026-12-05 21:00:00 UTC</sub>")

        late = Outcome("web", result("image pull backoff @acme/x", ok=False), "Degraded")
        update_deploy_row(forge, pr, MERGE, late, "sluice-bot", T1, fallback="unused")

        (only,) = forge.list_comments(pr)
        assert only.id == first.id, "edited in place, not reposted"
        assert "| `web` | ❌ failed | Degraded | 2 updated | – |" in only.body
        assert "| `api` | ✅ succeeded | Healthy | 2 updated | – |" in only.body
        assert "`web`: image pull backoff @\u200bacme/x" in only.body
        assert only.body.count("<sub>updated") == 1 and "21:05:00 UTC" in only.body
        check_inert(only.body)
        # Another merge gets its own comment.
        update_deploy_row(
            forge,
            pr,
            "e" * 40,
            late,
            "sluice-bot",
            T1,
            fallback=deploy_comment(title, "", [late], []),
        )
        assert len(forge.list_comments(pr)) == 2

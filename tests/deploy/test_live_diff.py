"""The "Live cluster" section of PR previews, over real HTTP.

Real: the puller (its API, agent and applier) against the Kubernetes API emulator,
git, gpg, the preview pipeline and its Rego policies, and the bot's job handlers
as ``sluice serve`` wires them (``job_runner``) talking to the GitHub emulator.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from werkzeug.serving import make_server

from bot.config.server import ServerConfig
from bot.deploy.live_diff import LiveDiff, withhold_secret_values
from bot.deploy.live_report import render_live_section
from bot.deploy.puller_client import PullerClient, PullerError, PullerUnknownApp
from bot.forge.webhooks import parse_github
from bot.models import ObjectChange
from bot.puller.api import create_puller_app
from bot.server.handlers import job_runner
from bot.server.storage.queue import JobQueue
from bot.server.web import job_for
from bot.server.worker import CancelToken
from tests import gpgkit
from tests.emulators.github import GitHubEmulator
from tests.pullerkit import SECRET_VALUE, TOKEN, Keys, World, make_keys, manifests, world

pytestmark = pytest.mark.timeout(60)

REPO = "acme/gitops"
NEW_SECRET = "correct-horse-battery-staple-42"
HAND_EDIT = "edited by hand"


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


FORBIDDEN = [SECRET_VALUE, NEW_SECRET, b64(SECRET_VALUE), b64(NEW_SECRET), TOKEN]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    keys = make_keys(tmp_path_factory.mktemp("live-diff-keys"))
    yield keys
    gpgkit.kill_agent(keys.home)


@dataclass
class Stack:
    w: World
    puller_url: str
    base: str
    head: str

    def pr_files(self) -> dict[str, str]:
        files = manifests(greeting="proposed")
        files["apps/web/secret.yaml"] = yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "web-secret"},
                "stringData": {"password": NEW_SECRET},
            }
        )
        return files


@pytest.fixture
def stack(tmp_path: Path, keys: Keys) -> Iterator[Stack]:
    """The puller has deployed the base; someone then edited the live ConfigMap by hand;
    branch ``change`` (not deployed) changes the ConfigMap, the Secret and adds an app
    the puller does not own."""
    with world(tmp_path, keys) as w:
        base = gpgkit.git(w.origin, "rev-parse", "HEAD")
        w.record(base)
        agent = w.agent(interval_s=3600)  # the first cycle deploys the base
        server = make_server("127.0.0.1", 0, create_puller_app(agent, TOKEN), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        agent.start()
        try:
            puller = PullerClient(f"http://127.0.0.1:{server.server_port}", TOKEN, timeout_s=10)
            puller.follow("web", lambda s: s.phase == "Synced", timeout_s=20, poll_s=0.05)
            core = client.CoreV1Api(w.emu.api_client())
            core.patch_namespaced_config_map(
                "web-config", "web", {"data": {"greeting": HAND_EDIT}}, field_manager="kubectl"
            )
            gpgkit.git(w.origin, "checkout", "-q", "-b", "change")
            stack = Stack(w, puller.url, base, "")
            config = yaml.safe_load((w.origin / ".sluice.yaml").read_text())
            config["apps"].append({"name": "billing", "path": "apps/billing", "namespace": "bill"})
            billing = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "billing"},
                       "data": {"plan": "gold"}}  # fmt: skip
            stack.head = w.commit(
                {
                    **stack.pr_files(),
                    ".sluice.yaml": yaml.safe_dump(config),
                    "apps/billing/configmap.yaml": yaml.safe_dump(billing),
                },
                "change web, add billing",
            )
            gpgkit.git(w.origin, "checkout", "-q", "main")
            yield stack
        finally:
            agent.stop()
            server.shutdown()
            thread.join(5)


def preview_comment(tmp_path: Path, stack: Stack, **env: str) -> str:
    """Run the PR's preview job through the handlers ``sluice serve`` builds; the comment."""
    with GitHubEmulator(bot_login="sluice-bot") as gh:
        gh.add_repo(REPO, clone_url=str(stack.w.origin))
        gh.add_pull(REPO, number=1, base_sha=stack.base, head_ref="change", head_sha=stack.head,
                    files=["apps/web/configmap.yaml", "apps/web/secret.yaml"])  # fmt: skip
        config = ServerConfig.from_env(
            {
                "SLUICE_DATA_DIR": str(tmp_path / "bot"),
                "SLUICE_GITHUB_TOKEN": gh.bot_token,
                "SLUICE_GITHUB_API_URL": gh.base_url,
                "SLUICE_GITHUB_WEBHOOK_SECRET": "hook-secret",
                "SLUICE_TRUSTED_KEYS": str(stack.w.keys.trusted_keys),
                **env,
            }
        )
        config.data_dir.mkdir(parents=True, exist_ok=True)
        headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d-1"}
        payload = json.dumps(gh.pull_request_event(REPO, 1)).encode()
        new_job = job_for(config, parse_github(headers, payload).event)
        queue = JobQueue(config.db_path)
        queue.enqueue(new_job)  # type: ignore[arg-type]
        job = queue.claim("test-worker", 60)
        assert job is not None and job.kind == "preview"
        job_runner(config).handle(job, CancelToken(queue, job))
        [comment] = gh.comments(REPO, 1)
        statuses = {s.context: s.state for s in gh.statuses(REPO, stack.head)}
        assert statuses["sluice/preview"] != "pending"
        return comment.body


def live_section(body: str) -> str:
    """The live section as a reader sees it (Markdown backslash escapes removed)."""
    assert body.count("### Live cluster") == 1, body
    return body[body.index("### Live cluster") :].replace("\\", "")


def test_preview_shows_what_the_pr_would_change_in_the_live_cluster(
    tmp_path: Path, stack: Stack, keys: Keys
):
    # A signing key turns deploys on: the section then uses the promoter's puller client.
    signing = {
        "SLUICE_SIGNING_METHOD": "gpg",
        "SLUICE_SIGNING_KEY": keys.bot,
        "SLUICE_GNUPGHOME": str(keys.home),
    }
    stack.w.emu.reset_calls()

    body = preview_comment(
        tmp_path, stack, SLUICE_PULLER_URL=stack.puller_url, SLUICE_PULLER_TOKEN=TOKEN, **signing
    )

    live = live_section(body)
    # The hand edit is only in the cluster: the Git diff cannot show it, the live one does.
    assert f"-  greeting: {HAND_EDIT}" in live and "+  greeting: proposed" in live
    assert HAND_EDIT not in body[: body.index("### Live cluster")]
    assert "<code>web</code>: 2 updated against the live cluster" in live
    secret_diff = live[live.index("`Secret web/web-secret`") :]
    assert "-  password: <secret sha:" in secret_diff  # it changed, and shows only masked
    assert "+  password: <secret sha:" in secret_diff
    assert "`billing`: not managed by the puller" in live
    for forbidden in FORBIDDEN:
        assert forbidden not in body
    assert stack.w.emu.write_calls() == 0  # a dry run changes nothing
    live_cm = stack.w.live("ConfigMap", "web-config")
    assert live_cm is not None and live_cm["data"] == {"greeting": HAND_EDIT}


def test_preview_posts_with_a_note_when_the_puller_is_down(tmp_path: Path, stack: Stack):
    # No signing key: deploys are off, the handlers hold their own puller client.
    with make_server("127.0.0.1", 0, lambda *_: []) as dead:  # bound, never serving
        port = dead.server_port
    body = preview_comment(
        tmp_path, stack, SLUICE_PULLER_URL=f"http://127.0.0.1:{port}", SLUICE_PULLER_TOKEN=TOKEN
    )

    live = live_section(body)
    assert "`web`: live diff unavailable: POST /v1/diff: cannot reach the puller" in live
    assert "`billing`: live diff unavailable" in live  # not asked again once unreachable
    assert "### Changes" in body and "+  greeting: proposed" in body
    for forbidden in FORBIDDEN:
        assert forbidden not in body


def test_preview_without_a_puller_has_no_live_section(tmp_path: Path, stack: Stack):
    body = preview_comment(tmp_path, stack)

    assert "Live cluster" not in body
    assert "+  greeting: proposed" in body


def test_puller_errors_are_clear_and_never_carry_the_token(stack: Stack):
    wrong = PullerClient(stack.puller_url, "not-the-token")
    with pytest.raises(PullerError, match="answered 401: missing or wrong bearer token") as info:
        wrong.diff("web", [])
    assert "not-the-token" not in str(info.value)
    right = PullerClient(stack.puller_url, TOKEN)
    with pytest.raises(PullerUnknownApp):
        right.diff("billing", [])
    with pytest.raises(PullerError, match="answered 400: objects"):
        right.diff("web", [{"kind": "ConfigMap"}])


def test_a_diff_showing_a_head_secret_value_is_withheld():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "data": {"key": b64("line-one-value\nline-two-value")}}  # fmt: skip
    leaky = ObjectChange("update", "v1", "ConfigMap", "web", "c", "+  copy: line-two-value\n")
    clean = ObjectChange("update", "v1", "ConfigMap", "web", "d", "+  greeting: hi\n")

    kept = withhold_secret_values([leaky, clean], [secret])

    assert "line-two-value" not in kept[0].diff and "withheld" in kept[0].diff
    assert kept[1] == clean


def test_live_section_keeps_its_budget_and_escapes_names():
    big = "+" + "x" * 3000 + "\n"
    changes = tuple(
        ObjectChange("update", "v1", "ConfigMap", "web", f"cm-{i}", big) for i in range(20)
    )
    diffs = [
        LiveDiff("web", changes),
        LiveDiff("<b>@team</b>", problem="boom ```"),
        LiveDiff("api", ()),
    ]

    out = render_live_section(diffs, budget=8_000)

    assert len(out) <= 8_000
    assert "live object diffs omitted (budget)" in out
    # The name stays inside a code span (no HTML, no mention); the problem cannot open a fence.
    assert "- `<b>@team</b>`: boom \\`\\`\\`\n" in out
    assert out.count("<b>") == 1
    assert "- `api`: in sync with the live cluster\n" in out

"""Merge-to-deploy on the bot's side (bot.deploy.Promoter and its parts) over real HTTP.

Real here: git (a bare repository is the remote, its path the clone URL), gpg (a
maintainer key signs the GitOps commits, the bot's own key signs the ledger and
its revert commits), the preview pipeline with the repo's Rego policies, SQLite.
The GitHub API (and once the GitLab API) is the emulator in tests/emulators.

The puller is a TEST DOUBLE: a minimal HTTP server in this module implementing
the PULLER_API.md endpoints (``/v1/wake``, ``/v1/apps/<app>``) that answers
canned results for whatever the ledger in the bare repo names on wake-up. It
applies nothing. It is allowed only as a double of the puller in these unit
tests; the full end-to-end test with the real puller lives elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from werkzeug.serving import make_server

from bot.config import ConfigError
from bot.config.server import RepoSettings, ServerConfig
from bot.deploy import DeployLog, PinStore, Promoter
from bot.deploy.comments import DEPLOYING
from bot.deploy.ledger import BotSigner, Ledger, SigningConfig, verify_tip
from bot.deploy.overrides import OverrideStore, pr_key, violations_fingerprint
from bot.deploy.puller_client import PullerClient
from bot.forge.base import RepoRef
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.forge.retry import Retrier
from bot.gitops import Git, Mirrors
from bot.preview import PreviewOptions, run_preview
from bot.server.metrics import Metrics
from bot.server.storage import open_database
from bot.server.storage.queue import JobQueue
from bot.server.web import create_app
from bot.signatures import SignatureVerifier, TrustedKeys
from tests import gpgkit
from tests.botkit import ROOT, _labels, deployment
from tests.emulators.github import GitHubEmulator
from tests.emulators.gitlab import DEVELOPER, GitLabEmulator
from tests.gpgkit import commit, git

pytestmark = pytest.mark.timeout(120)

REPO = "acme/gitops"
PULLER_TOKEN = "puller-shared-secret-3f9a1c"
WEB = "apps/web/deployment.yaml"


def dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


# -- keys (module scope: key generation is the slow part) -----------------------------------


@dataclass
class Keys:
    home: Path
    maintainer: list[str]  # git -c options that sign as the maintainer
    bot_fpr: str
    repo_keys: Path  # trusted for GitOps commits: the maintainer and the bot (revert commits)
    bot_keys: Path  # trusted for ledger commits: the bot only


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    tmp = tmp_path_factory.mktemp("promote-keys")
    home = gpgkit.new_gnupghome(tmp / "gnupg")
    maintainer = gpgkit.make_gpg_key(home, "Maintainer <maintainer@example.com>")
    bot = gpgkit.make_gpg_key(home, "Sluice Bot <bot@sluice.invalid>")
    repo_keys, bot_keys = tmp / "repo-keys", tmp / "bot-keys"
    for directory, fprs in ((repo_keys, (maintainer, bot)), (bot_keys, (bot,))):
        directory.mkdir()
        (directory / "allowed_signers").write_text("")
        for fpr in fprs:
            (directory / f"{fpr}.asc").write_text(gpgkit.export_public(home, fpr))
    yield Keys(home, gpgkit.gpg_signing_config(home, maintainer), bot, repo_keys, bot_keys)
    gpgkit.kill_agent(home)


# -- the GitOps repository ---------------------------------------------------------------


@dataclass
class GitOps:
    work: Path
    bare: Path
    sign: list[str]

    def branch(self, name: str, start: str, changes: dict[str, str], *, signed: bool = True) -> str:
        git(self.work, "checkout", "-q", "-B", name, start)
        sha = commit(
            self.work, f"{name}: change", files=changes, config=self.sign if signed else []
        )
        git(self.work, "push", "-q", "-f", str(self.bare), f"{name}:refs/heads/{name}")
        return sha

    def merge(self, branch: str, number: int) -> str:
        """What the forge does on "Merge": an unsigned --no-ff merge commit into main."""
        self.fetch()
        git(self.work, "checkout", "-q", "main")
        git(self.work, "reset", "-q", "--hard", "origin/main")
        git(
            self.work,
            "fetch",
            "-q",
            str(self.bare),
            f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
        )
        git(self.work, "merge", "-q", "--no-ff", "--no-gpg-sign", f"origin/{branch}", "-m",
            f"Merge pull request #{number} from {branch}")  # fmt: skip
        git(self.work, "push", "-q", str(self.bare), "main:refs/heads/main")
        return git(self.work, "rev-parse", "HEAD")

    def fetch(self) -> None:
        git(self.work, "fetch", "-q", str(self.bare), "+refs/heads/main:refs/remotes/origin/main")

    def main(self) -> str:
        return git(self.bare, "rev-parse", "refs/heads/main")

    def ledger(self) -> Ledger:
        return Ledger(Git(self.bare))


def build_gitops(tmp: Path, keys: Keys) -> GitOps:
    work = gpgkit.init_repo(tmp / "work")
    config = {
        "apps": [
            {"name": "web", "path": "apps/web", "renderer": "plain", "namespace": "web"},
            {"name": "worker", "path": "apps/worker", "renderer": "plain", "namespace": "work"},
            {"name": "staging", "path": "apps/staging", "renderer": "plain",
             "namespace": "staging", "sync_before_merge": True},
        ],
        "policy": {"paths": ["policies/"]},
        "signatures": {"mode": "all"},
    }  # fmt: skip
    files = {
        ".sluice.yaml": dump(config),
        WEB: dump(deployment("web", image="ghcr.io/acme/web:1.0.0")),
        "apps/worker/deployment.yaml": dump(deployment("worker", image="ghcr.io/acme/w:2.1.0")),
        "apps/staging/deployment.yaml": dump(deployment("staging", image="ghcr.io/acme/s:1.0")),
    }
    for rego in sorted((ROOT / "policies").glob("*.rego")):
        if not rego.name.endswith("_test.rego"):
            files[f"policies/{rego.name}"] = rego.read_text()
    commit(work, "GitOps layout", files=files, config=keys.maintainer)
    bare = tmp / "gitops.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    git(work, "remote", "add", "origin", str(bare))
    return GitOps(work, bare, keys.maintainer)


def web(replicas: int, image: str = "ghcr.io/acme/web:1.0.0") -> dict[str, str]:
    return {WEB: dump(deployment("web", image=image, replicas=replicas))}


# -- the puller test double -------------------------------------------------------------------


@dataclass
class PullerDouble:
    """Answers PULLER_API.md with canned results for what the bare repo's ledger names."""

    bare: Path
    token: str = PULLER_TOKEN
    wakes: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    canned: dict[str, Any] = field(default_factory=dict)  # overrides for the next results
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_status: Callable[[str], None] | None = None  # called as an app's status is asked for

    def wake(self, app: str) -> None:
        tip = _git_out(self.bare, "rev-parse", "--verify", "--quiet", "refs/heads/sluice/ledger")
        if not tip:
            return
        writer = _git_out(self.bare, "log", "-1", "--format=%H", tip, "--", f"apps/{app}.yaml")
        entry = yaml.safe_load(_git_out(self.bare, "show", f"{tip}:apps/{app}.yaml") or "null")
        if not entry:
            return
        result = {
            "revision": entry["revision"], "ledger_commit": writer, "action": entry["action"],
            "pr": entry["pr"], "result": "succeeded", "health": "Healthy", "created": 0,
            "updated": 1, "unchanged": 4, "pruned": 0, "started_at": "2026-01-01T00:00:00Z",
            "finished_at": f"2026-01-01T00:00:{len(self.wakes):02d}Z", "duration_s": 0.5,
            "message": "", **self.canned,
        }  # fmt: skip
        self.results[app] = result

    def status(self, app: str) -> dict[str, Any]:
        last = self.results.get(app)
        return {
            "name": app, "revision": last and last["revision"],
            "ledger_commit": last and last["ledger_commit"],
            "desired_revision": last and last["revision"], "phase": "Synced" if last else "Idle",
            "health": last["health"] if last else "Unknown", "message": "", "drift": [],
            "last_result": last, "history": [last] if last else [],
        }  # fmt: skip


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


def _git_out(bare: Path, *args: str) -> str:
    proc = subprocess.run(["git", "--git-dir", str(bare), *args], capture_output=True)
    return proc.stdout.decode().strip()


@pytest.fixture
def puller_double(tmp_path: Path) -> Iterator[tuple[PullerDouble, str]]:
    double = PullerDouble(tmp_path / "gitops.git")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {double.token}":
                self._send(401, {"error": "unauthorized"})
                return False
            return True

        def do_POST(self) -> None:
            body = json.loads(
                self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"
            )
            if not self._authorized():
                return
            if self.path != "/v1/wake":
                self._send(404, {"error": "not found"})
                return
            with double.lock:
                double.wakes.append(body)
                double.wake(body["app"])
            self._send(202, {"queued": [body["app"]]})

        def do_GET(self) -> None:
            if not self._authorized():
                return
            app = self.path.removeprefix("/v1/apps/")
            if app not in ("web", "worker", "staging"):
                self._send(404, {"error": f"no app {app}"})
                return
            if double.on_status is not None:
                double.on_status(app)
            with double.lock:
                self._send(200, double.status(app))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield double, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


# -- the world: repo, GitHub, promoter ----------------------------------------------------


@dataclass
class World:
    gitops: GitOps
    gh: GitHubEmulator
    forge: GitHubForge
    promoter: Promoter
    puller: PullerDouble
    overrides: OverrideStore
    requeued: list[int]
    repo: RepoRef

    def pull(self, number: int, branch: str, *, base: str | None = None, author: str = "alice"):
        base = base or self.gitops.main()
        head = git(self.gitops.bare, "rev-parse", f"refs/heads/{branch}")
        files = git(self.gitops.bare, "diff", "--name-only", f"{base}...{head}").split()
        return self.gh.add_pull(REPO, number=number, author=author, base_sha=base,
                                head_ref=branch, head_sha=head, files=files)  # fmt: skip

    def approve(self, number: int, user: str = "bob", sha: str | None = None) -> None:
        self.gh.add_review(REPO, number, user, commit_id=sha)

    def merge(self, number: int) -> str:
        pull = self.gh._pulls[(REPO, number)]
        merge = self.gitops.merge(pull.head_ref, number)
        self.gh.merge_pull(REPO, number, merge)
        return merge

    def get(self, number: int):
        return self.forge.get_pull_request(self.repo, number)

    def merged(self, number: int):
        self.promoter.on_merged(self.forge, self.get(number))

    def final(self, sha: str) -> dict[str, Any]:
        latest: dict[str, Any] = {}
        for status in self.gh.statuses(REPO, sha):
            latest[status.context] = status
        return latest

    def comments(self, number: int) -> list[str]:
        return [c.body for c in self.gh.comments(REPO, number)]


def make_promoter(
    tmp: Path, keys: Keys, puller_url: str, *, repos: tuple[RepoSettings, ...] = ()
) -> tuple[Promoter, OverrideStore]:
    config = ServerConfig(
        data_dir=tmp / "data", trusted_keys=keys.repo_keys, repos=repos,
        puller_url=puller_url, puller_token=PULLER_TOKEN,
        signing=SigningConfig("gpg", keys.bot_fpr, gnupg_home=keys.home),
    )  # fmt: skip
    config.data_dir.mkdir(parents=True, exist_ok=True)
    database = open_database(None, config.db_path)
    overrides = OverrideStore(database)
    promoter = Promoter(
        config=config,
        mirrors=Mirrors(tmp / "data" / "mirrors"),
        overrides=overrides,
        pins=PinStore(database),
        deploy_log=DeployLog(database),
        signer=BotSigner(config.signing),  # type: ignore[arg-type]
        cache_dir=tmp / "data" / "cache",
        puller=PullerClient(puller_url, PULLER_TOKEN, timeout_s=5),
        follow_timeout_s=10,
        poll_s=0.05,
    )
    return promoter, overrides


@pytest.fixture
def world(tmp_path: Path, keys: Keys, puller_double) -> Iterator[World]:
    double, puller_url = puller_double
    gitops = build_gitops(tmp_path, keys)
    promoter, overrides = make_promoter(tmp_path, keys, puller_url)
    requeued: list[int] = []
    promoter.requeue_preview = lambda _forge, pr: requeued.append(pr.number)
    with GitHubEmulator(bot_login="sluice-bot") as gh:
        gh.add_repo(REPO, clone_url=str(gitops.bare))
        forge = GitHubForge(base_url=gh.base_url, token=gh.bot_token,
                            retrier=Retrier(attempts=2, sleep=lambda _s: None))  # fmt: skip
        repo = RepoRef("github", REPO, str(gitops.bare))
        yield World(gitops, gh, forge, promoter, double, overrides, requeued, repo)


def bot_trust(keys: Keys) -> TrustedKeys:
    return TrustedKeys.load(keys.bot_keys)


# -- promotion on merge -------------------------------------------------------------------------


def test_merge_that_passes_every_gate_writes_one_signed_ledger_commit_and_reports(world, keys):
    world.gitops.branch("scale", "main", web(3))
    world.pull(1, "scale")
    world.gitops.branch("other", "main", web(2, image="ghcr.io/acme/web:1.0.1"))
    world.pull(2, "other")  # an open PR into main touching the same app
    world.approve(1, "bob")
    merge = world.merge(1)

    world.merged(1)

    verified = verify_tip(Git(world.gitops.bare), bot_trust(keys))  # real gpg over the pushed tip
    entry = verified.approved_revision("web", "main")
    assert (entry.revision, entry.action, entry.pr, entry.approved_by) == (
        merge,
        "deploy",
        1,
        ["bob"],
    )
    assert entry.gates["signatures"] == "pass" and entry.gates["approvals"] == "1/1"
    assert entry.previous is None
    assert verified.entry("worker") is None  # the merge did not touch it
    assert world.puller.wakes == [{"app": "web"}]
    statuses = world.final(merge)
    assert statuses["sluice/deploy/web"].state == "success"
    assert "1 updated" in statuses["sluice/deploy/web"].description
    report = world.comments(1)[-1]
    assert "Sluice deploy" in report and verified.tip[:12] in report
    assert "| `web` | ✅ succeeded | Healthy | 1 updated | 0.5s |" in report
    assert world.requeued == [2]  # PR 2's preview is stale now that web moved

    world.merged(1)  # a re-run (at-least-once jobs) records nothing twice
    assert len(world.gitops.ledger().history("web")) == 1


def test_the_deploy_comment_shows_deploying_first_then_is_edited_with_the_result(world):
    world.gitops.branch("scale", "main", web(3))
    world.pull(1, "scale")
    world.approve(1, "bob")
    merge = world.merge(1)
    seen: list[tuple[int, str]] = []  # the bot's comments while the puller was deploying
    world.puller.on_status = lambda _app: seen.extend(
        (c.id, c.body) for c in world.gh.comments(REPO, 1) if not seen
    )

    world.merged(1)

    ledger_commit = world.gitops.ledger().tip()
    assert len(seen) == 1, "one comment on the PR while the puller worked"
    first_id, first = seen[0]
    assert f"Sluice deploy of `{merge[:12]}`" in first
    assert f"ledger commit `{ledger_commit[:12]}`" in first
    assert f"| `web` | {DEPLOYING} `{merge[:12]}` | – | – | – |" in first
    assert "<sub>made " in first and "succeeded" not in first
    (final,) = world.gh.comments(REPO, 1)
    assert final.id == first_id, "edited in place, not posted again"
    assert "| `web` | ✅ succeeded | Healthy | 1 updated | 0.5s |" in final.body
    assert DEPLOYING not in final.body and "<sub>updated " in final.body
    assert f"ledger commit `{ledger_commit[:12]}`" in final.body

    world.merged(1)  # a re-run of the job keeps the one comment
    assert [c.id for c in world.gh.comments(REPO, 1)] == [first_id]


@pytest.mark.parametrize(
    ("changes", "signed", "gate", "detail"),
    [
        (web(3), False, "signatures", "unsigned"),
        (web(3, image="ghcr.io/acme/web:latest"), True, "policy", "deny_latest_tag"),
        ({"apps/web/broken.yaml": "kind: [unclosed\n"}, True, "render", "did not render"),
    ],
    ids=["unsigned-commit", "policy-deny", "render-error"],
)
def test_merge_failing_a_gate_writes_nothing_and_names_the_gate(
    world, changes, signed, gate, detail
):
    world.gitops.branch("change", "main", changes, signed=signed)
    world.pull(1, "change")
    world.approve(1)
    merge = world.merge(1)

    world.merged(1)

    assert world.gitops.ledger().tip() is None  # no ledger branch was ever pushed
    assert world.puller.wakes == []
    comment = world.comments(1)[-1]
    assert "did not deploy" in comment and f"- {gate}:" in comment and detail in comment
    status = world.final(merge)["sluice/deploy/web"]
    assert (status.state, status.description) == ("failure", f"not deployed: {gate} gate failed")


def test_policy_override_recorded_for_the_head_lets_the_merge_deploy(world):
    head = world.gitops.branch("latest", "main", web(3, image="ghcr.io/acme/web:latest"))
    base = world.gitops.main()
    world.pull(1, "latest")
    world.approve(1)
    report = run_preview(world.gitops.bare, base, head, PreviewOptions(
        cache_dir=world.promoter.cache_dir, keys_dir=world.promoter.config.trusted_keys))  # fmt: skip
    world.overrides.record(pr_key(world.repo, 1), head, violations_fingerprint(report), "carol",
                           "hotfix, tag pinned tomorrow", world.promoter.clock())  # fmt: skip
    merge = world.merge(1)

    world.merged(1)

    entry = world.gitops.ledger().read("web")
    assert entry is not None and entry.revision == merge
    assert entry.gates["policy"] == "overridden"
    assert entry.gates["policy_override"]["by"] == "carol"


def test_approvals_of_an_older_head_and_the_authors_own_do_not_count(world):
    first = world.gitops.branch("two", "main", web(3))
    world.gitops.branch("two", "two", web(4))
    world.pull(1, "two", author="alice")
    world.approve(1, "bob", sha=first)  # reviewed before the second push
    world.approve(1, "alice")  # the author
    merge = world.merge(1)

    world.merged(1)

    assert world.gitops.ledger().tip() is None
    comment = world.comments(1)[-1]
    assert "- approvals: 0 of 1 required approvals" in comment
    assert "approvals of older commits do not count (`bob`)" in comment
    assert "the author's own approval does not count" in comment
    assert world.final(merge)["sluice/deploy/web"].state == "failure"


def test_failed_deploy_reported_by_the_puller_is_a_failure_status(world):
    world.gitops.branch("scale", "main", web(3))
    world.pull(1, "scale")
    world.approve(1)
    merge = world.merge(1)
    world.puller.canned = {
        "result": "failed",
        "health": "Degraded",
        "message": "image pull backoff",
    }

    world.merged(1)

    assert world.gitops.ledger().read("web") is not None  # approved; the cluster failed it
    status = world.final(merge)["sluice/deploy/web"]
    assert status.state == "failure" and "deploy failed" in status.description
    assert "image pull backoff" in world.comments(1)[-1]


# -- /sync ------------------------------------------------------------------------------------


def test_sync_on_an_open_pr_is_refused_unless_the_app_allows_it(world):
    world.gitops.branch("web-open", "main", web(3))
    world.pull(1, "web-open")
    world.approve(1)

    reply = world.promoter.sync(world.forge, world.get(1), "bob")

    assert "refused" in reply and "`web`" in reply and "sync_before_merge: true" in reply
    assert world.gitops.ledger().tip() is None and world.puller.wakes == []

    staging = {
        "apps/staging/deployment.yaml": dump(deployment("staging", image="ghcr.io/acme/s:1.1"))
    }
    head = world.gitops.branch("staging-open", "main", staging)
    world.pull(2, "staging-open")
    world.approve(2)

    reply = world.promoter.sync(world.forge, world.get(2), "bob", ("staging",))

    entry = world.gitops.ledger().read("staging")
    assert entry is not None and (entry.action, entry.revision, entry.pr) == (
        "preview-deploy",
        head,
        2,
    )
    assert "preview-deploy" in reply and world.puller.wakes == [{"app": "staging"}]
    assert world.final(head)["sluice/deploy/staging"].state == "success"


def test_sync_on_a_merged_pr_wakes_the_puller_and_reports(world):
    world.gitops.branch("scale", "main", web(3))
    world.pull(1, "scale")
    world.approve(1)
    world.merge(1)
    world.merged(1)
    tip = world.gitops.ledger().tip()

    reply = world.promoter.sync(world.forge, world.get(1), "bob")

    assert world.puller.wakes == [{"app": "web"}, {"app": "web"}]
    assert reply.startswith("`/sync`: `web`: deployed")
    assert world.gitops.ledger().tip() == tip  # /sync never writes the ledger for a merged PR


# -- /rollback, the revert PR and the pin ---------------------------------------------------------


def test_rollback_pins_until_the_revert_merges(world, keys):
    world.gitops.branch("three", "main", web(3))
    world.pull(1, "three")
    world.approve(1)
    first = world.merge(1)
    world.merged(1)
    world.gitops.branch("four", "main", web(4))
    world.pull(2, "four")
    world.approve(2)
    second = world.merge(2)
    world.merged(2)
    ledger = world.gitops.ledger()
    assert ledger.read("web").previous == first  # type: ignore[union-attr]

    reply = world.promoter.rollback(world.forge, world.get(2), "bob")

    entry = ledger.read("web")
    assert entry is not None and (entry.action, entry.revision, entry.pr) == ("rollback", first, 2)
    verify_tip(Git(world.gitops.bare), bot_trust(keys))
    revert = next(p for p in world.gh.pulls(REPO) if p.head_ref == "sluice/revert-2")
    assert revert.title.startswith("Revert #2") and revert.base_ref == "main"
    assert f"revert PR #{revert.number}" in reply and "pinned" in reply
    bare = Git(world.gitops.bare)
    assert bare.read_file(revert.head_sha, WEB) == bare.read_file(first, WEB)  # 4 → 3 replicas
    with SignatureVerifier(TrustedKeys.load(keys.repo_keys)) as verifier:
        assert verifier.check_commit(bare, revert.head_sha).status == "valid"  # signed by the bot

    # A later merge touching the pinned app is held: nothing re-deploys the bad change.
    service = {"apps/web/config.yaml": dump({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "web", "labels": _labels("web")}, "data": {"a": "1"}})}  # fmt: skip
    world.gitops.branch("config", "main", service)
    world.pull(10, "config")
    world.approve(10)
    third = world.merge(10)
    world.merged(10)

    status = world.final(third)["sluice/deploy/web"]
    assert status.state == "failure"
    assert status.description == f"held: pinned by rollback of #2 until #{revert.number} merges"
    assert ledger.read("web").revision == first  # type: ignore[union-attr]

    # Merging the revert unpins and deploys the reverted tree.
    world.approve(revert.number)
    revert_merge = world.merge(revert.number)
    world.merged(revert.number)

    entry = ledger.read("web")
    assert entry is not None and (entry.action, entry.revision) == ("deploy", revert_merge)
    assert world.promoter.pins.pins(f"github:{REPO}") == []
    assert "Unpinned `web`" in world.comments(revert.number)[-1]
    assert second not in {e.revision for _, e in ledger.history("web")[:1]}


def test_rollback_to_a_revision_the_ledger_never_named_is_refused(world):
    world.gitops.branch("three", "main", web(3))
    world.pull(1, "three")
    world.approve(1)
    world.merge(1)
    world.merged(1)
    stray = world.gitops.branch("stray", "main", web(7))
    tip = world.gitops.ledger().tip()

    reply = world.promoter.rollback(world.forge, world.get(1), "bob", (), stray)

    assert "refused" in reply and "never deployed for `web`" in reply
    assert world.gitops.ledger().tip() == tip
    assert world.promoter.pins.pins(f"github:{REPO}") == []
    assert not any(p.head_ref.startswith("sluice/revert") for p in world.gh.pulls(REPO))

    reply = world.promoter.rollback(world.forge, world.get(1), "bob")  # nothing before #1
    assert "nothing was deployed for `web` before #1" in reply


def test_rollback_and_sync_refuse_pull_requests_in_the_wrong_state(world):
    world.gitops.branch("open", "main", web(3))
    world.pull(1, "open")
    assert "merged pull request" in world.promoter.rollback(world.forge, world.get(1), "bob")


# -- puller events ---------------------------------------------------------------------------


def test_puller_events_are_authenticated_queued_and_reported_once(world, tmp_path):
    world.gitops.branch("scale", "main", web(3))
    world.pull(1, "scale")
    world.approve(1)
    merge = world.merge(1)
    world.merged(1)
    config = world.promoter.config
    queue = JobQueue(config.db_path)
    app = create_app(config, queue, Metrics())
    drift = {"type": "drift", "app": "web", "revision": merge, "pr": 1, "drift": [
        {"action": "update", "apiVersion": "apps/v1", "kind": "Deployment", "namespace": "web",
         "name": "web", "diff": "-  replicas: 3\n+  replicas: 9\n"}]}  # fmt: skip
    with serve_in_thread(app) as url:
        endpoint = f"{url}/v1/puller/events"
        wrong = requests.post(endpoint, json=drift, headers={"Authorization": "Bearer nope"})
        missing = requests.post(endpoint, json=drift)
        malformed = requests.post(endpoint, json={"type": "drift", "app": "Web!"},
                                  headers={"Authorization": f"Bearer {PULLER_TOKEN}"})  # fmt: skip
        accepted = requests.post(endpoint, json=drift,
                                 headers={"Authorization": f"Bearer {PULLER_TOKEN}"})  # fmt: skip
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert malformed.status_code == 400 and "app" in malformed.json()["error"]
    assert accepted.status_code == 202
    jobs = [j for j in queue.jobs() if j.kind == "puller-event"]
    assert len(jobs) == 1 and jobs[0].payload == drift

    before = len(world.comments(1))
    world.promoter.on_puller_event(lambda _name: world.forge, jobs[0].payload)
    world.promoter.on_puller_event(lambda _name: world.forge, jobs[0].payload)  # same drift

    comments = world.comments(1)
    assert len(comments) == before + 1
    assert "Drift on `web`" in comments[-1] and "+  replicas: 9" in comments[-1]
    status = world.final(merge)["sluice/deploy/web"]
    assert (status.state, status.description) == (
        "failure",
        f"drift: 1 objects differ from {merge[:12]}",
    )


# -- GitLab ----------------------------------------------------------------------------------


def test_gitlab_merge_request_merge_deploys(tmp_path, keys, puller_double):
    double, puller_url = puller_double
    gitops = build_gitops(tmp_path, keys)
    promoter, _ = make_promoter(tmp_path, keys, puller_url)
    head = gitops.branch("scale", "main", web(3))
    with GitLabEmulator(token="glpat-promote-test") as gl:
        project = gl.add_project("acme/gitops", http_url=str(gitops.bare))
        gl.add_branch(project, "main", gitops.main())
        alice, bob = gl.add_user("alice"), gl.add_user("bob")
        gl.add_member(project, alice, DEVELOPER)
        mr = gl.add_merge_request(project, source_branch="scale", target_branch="main", sha=head,
                                  base_sha=gitops.main(), author=alice)  # fmt: skip
        gl.approve(mr, bob)
        gl.approve(mr, alice)  # the author's own approval is listed but never counts
        merge = gitops.merge("scale", mr.iid)
        gl.merge(mr, merge)
        forge = GitLabForge(url=gl.url, token="glpat-promote-test",
                            retrier=Retrier(attempts=2, sleep=lambda _s: None))  # fmt: skip
        repo = RepoRef("gitlab", "acme/gitops", str(gitops.bare))

        promoter.on_merged(forge, forge.get_pull_request(repo, mr.iid))

        entry = verify_tip(Git(gitops.bare), bot_trust(keys)).approved_revision("web", "main")
        assert (entry.revision, entry.approved_by) == (merge, ["bob"])
        assert gl.latest_statuses(project, merge)["sluice/deploy/web"].state == "success"
        assert "✅ succeeded" in gl.notes(mr)[-1].body
        assert double.wakes == [{"app": "web"}]


# -- server config -----------------------------------------------------------------------------


def test_deploy_settings_come_from_the_environment_and_hide_secrets(tmp_path, keys):
    env = {
        "SLUICE_DATA_DIR": str(tmp_path), "SLUICE_PULLER_URL": "http://puller:8080/",
        "SLUICE_PULLER_TOKEN": PULLER_TOKEN, "SLUICE_SIGNING_METHOD": "gpg",
        "SLUICE_SIGNING_KEY": keys.bot_fpr, "SLUICE_GNUPGHOME": str(keys.home),
        "SLUICE_REQUIRED_APPROVALS": "2",
    }  # fmt: skip
    config = ServerConfig.from_env(env)
    assert (config.puller_url, config.required_approvals) == ("http://puller:8080", 2)
    assert config.signing is not None and config.deploys_enabled
    assert PULLER_TOKEN not in repr(config) and keys.bot_fpr not in repr(config)
    assert config.approvals_required(RepoSettings(required_approvals=0)) == 0
    defaults = ServerConfig.from_env({"SLUICE_DATA_DIR": str(tmp_path)})
    assert defaults.required_approvals == 1
    assert not defaults.deploys_enabled
    for bad, message in [
        ({"SLUICE_PULLER_URL": "http://puller"}, "SLUICE_PULLER_TOKEN is not"),
        ({"SLUICE_REQUIRED_APPROVALS": "many"}, "SLUICE_REQUIRED_APPROVALS"),
        ({"SLUICE_SIGNING_METHOD": "gpg"}, "SLUICE_SIGNING_KEY is not"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ServerConfig.from_env({"SLUICE_DATA_DIR": str(tmp_path), **bad})
    path = tmp_path / "server.yaml"
    path.write_text("repos:\n  - match: 'acme/*'\n    required_approvals: 3\n"
                    "    tracked_branch: prod\n    ledger_branch: deploy/ledger\n")  # fmt: skip
    settings = ServerConfig.from_env({"SLUICE_DATA_DIR": str(tmp_path)}, path).repo_settings(
        "github", "acme/x"
    )
    assert (settings.required_approvals, settings.tracked_branch, settings.ledger_branch) == (
        3, "prod", "deploy/ledger"
    )  # fmt: skip

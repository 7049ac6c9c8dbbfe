"""Merge-to-deploy end to end: the real bot, the real puller, emulated GitHub and Kubernetes.

* ``DeployKeys``: real OpenPGP keys. A maintainer signs the GitOps commits, GitHub's
  "web-flow" key signs the merge commits the forge makes (as github.com does), the bot
  signs the ledger from its own GNUPGHOME, and Mallory's key is trusted by nobody.
* ``GitOps``: a work clone and the bare repository that is the remote (its path is the
  clone URL the bot and the puller both use).
* ``PullerProcess``: the real ``sluice puller`` in its own process group.
* ``DeployStack``: everything wired together over HTTP on 127.0.0.1: ``sluice serve``
  (with ``SLUICE_PULLER_URL`` and the bot's signing key) ⇄ ``sluice puller`` (with
  ``SLUICE_BOT_EVENTS_URL``) → the Kubernetes API emulator; the GitHub emulator.
* ``GitLabDeployStack``: the same with the GitLab emulator as the forge, whose merge
  button makes an unsigned ``--no-ff`` merge commit in the bare repository.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.deploy.ledger import BotSigner, Ledger, LedgerEntry, SigningConfig
from bot.gitops import Git
from bot.report import MARKER
from tests import gpgkit
from tests.botkit import (
    GH_TOKEN,
    GL_TOKEN,
    ROOT,
    SluiceProcess,
    SluiceServer,
    server_env,
    wait_for,
)
from tests.emulators import github as ghemu
from tests.emulators import gitlab as glemu
from tests.emulators.kube import KubeEmulator
from tests.pullerkit import rollouts

BOT = "sluice-bot"
REPO = "acme/gitops"
PULLER_TOKEN = "puller-e2e-shared-secret-7c1d"
#: Namespaces a cluster admin created before Sluice (the apps hold no Namespace objects).
NAMESPACES = ("web", "api", "bulk", "staging")
MANAGED_BY = "app.kubernetes.io/managed-by"
APP_LABEL = "sluice.dev/app"


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def dump_all(objs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


# -- keys ---------------------------------------------------------------------------------


@dataclass
class DeployKeys:
    home: Path  # maintainer, GitHub web-flow and Mallory
    bot_home: Path  # the bot's GNUPGHOME: its own key only
    maintainer: str
    webflow: str
    mallory: str
    bot: str
    repo_keys: Path  # trusted for GitOps commits: maintainer, web-flow, the bot (reverts)
    bot_keys: Path  # trusted for ledger commits: the bot only

    def sign(self, fpr: str) -> list[str]:
        home = self.bot_home if fpr == self.bot else self.home
        return gpgkit.gpg_signing_config(home, fpr)

    def bot_signer(self) -> BotSigner:
        """The bot's own key (a test that uses it plays a compromised or buggy bot)."""
        return BotSigner(SigningConfig("gpg", self.bot, gnupg_home=self.bot_home))

    def mallory_signer(self) -> BotSigner:
        return BotSigner(SigningConfig("gpg", self.mallory, gnupg_home=self.home))

    def close(self) -> None:
        gpgkit.kill_agent(self.home)
        gpgkit.kill_agent(self.bot_home)


def make_deploy_keys(tmp: Path) -> DeployKeys:
    home = gpgkit.new_gnupghome(tmp / "gnupg")
    bot_home = gpgkit.new_gnupghome(tmp / "bot-gnupg")
    maintainer = gpgkit.make_gpg_key(home, "Maintainer <maintainer@example.com>")
    webflow = gpgkit.make_gpg_key(home, "GitHub <noreply@github.com>")
    mallory = gpgkit.make_gpg_key(home, "Mallory <mallory@example.com>")
    bot = gpgkit.make_gpg_key(bot_home, "Sluice Bot <bot@sluice.invalid>")
    repo_keys, bot_keys = tmp / "repo-keys", tmp / "bot-keys"
    for directory in (repo_keys, bot_keys):
        directory.mkdir()
        (directory / "allowed_signers").write_text("")
    for fpr in (maintainer, webflow):
        (repo_keys / f"{fpr}.asc").write_text(gpgkit.export_public(home, fpr))
    bot_public = gpgkit.export_public(bot_home, bot)
    (repo_keys / "bot.asc").write_text(bot_public)
    (bot_keys / "bot.asc").write_text(bot_public)
    return DeployKeys(home, bot_home, maintainer, webflow, mallory, bot, repo_keys, bot_keys)


# -- manifests ----------------------------------------------------------------------------


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}


def configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": _labels(name)}, "data": data}  # fmt: skip


def secret(name: str, key: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "labels": _labels(name)}, "type": "Opaque",
            "data": {key: b64(value)}}  # fmt: skip


def deployment(name: str, *, image: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _labels(name)},
            "template": {
                "metadata": {"labels": _labels(name)},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                    "containers": [{"name": "main", "image": image,
                                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}],
                },
            },
        },
    }  # fmt: skip


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": _labels(name)},
            "spec": {"selector": _labels(name), "ports": [{"port": 80, "targetPort": 8080}]}}  # fmt: skip


def web_files(
    *, greeting: str, replicas: int, password: str, image: str = "ghcr.io/acme/web:1.0.0"
) -> dict[str, str]:
    return {
        "apps/web/deployment.yaml": dump(deployment("web", image=image, replicas=replicas)),
        "apps/web/configmap.yaml": dump(configmap("web-config", {"greeting": greeting})),
        "apps/web/secret.yaml": dump(secret("web-db", "password", password)),
    }


def api_files(*, mode: str, token: str) -> dict[str, str]:
    return {
        "apps/api/configmap.yaml": dump(configmap("api-config", {"mode": mode})),
        "apps/api/secret.yaml": dump(secret("api-token", "token", token)),
    }


def bulk_files(prefix: str, count: int) -> dict[str, str]:
    objs = [configmap(f"{prefix}-{i:03d}", {"index": str(i)}) for i in range(count)]
    return {"apps/bulk/configmaps.yaml": dump_all(objs)}


def sluice_yaml() -> str:
    return dump(
        {
            "apps": [
                {"name": "web", "path": "apps/web", "renderer": "plain", "namespace": "web"},
                {"name": "api", "path": "apps/api", "renderer": "plain", "namespace": "api",
                 "self_heal": True},
                {"name": "bulk", "path": "apps/bulk", "renderer": "plain", "namespace": "bulk"},
                {"name": "staging", "path": "apps/staging", "renderer": "plain",
                 "namespace": "staging", "sync_before_merge": True},
            ],
            "policy": {"paths": ["policies/"]},
            "signatures": {"mode": "all"},
        }
    )  # fmt: skip


# -- the GitOps repository ------------------------------------------------------------------


@dataclass
class GitOps:
    work: Path
    bare: Path
    keys: DeployKeys

    def branch(
        self,
        name: str,
        changes: dict[str, str | None],
        *,
        start: str | None = None,
        signed: bool = True,
        message: str | None = None,
    ) -> str:
        """A commit on branch ``name`` (from ``start``, default main) pushed to the remote.
        A ``None`` content deletes the file."""
        self._fetch_main()  # the forge may have merged on the remote (GitLab's merge button)
        gpgkit.git(self.work, "checkout", "-q", "-B", name, start or self.main())
        sha = self._commit(changes, message or f"{name}: change", signed=signed)
        gpgkit.git(self.work, "push", "-q", "-f", str(self.bare), f"{name}:refs/heads/{name}")
        return sha

    def push_main(self, changes: dict[str, str | None], message: str) -> str:
        """A maintainer's signed commit pushed straight to main (no pull request)."""
        self._fetch_main()
        gpgkit.git(self.work, "checkout", "-q", "-B", "main", self.main())
        sha = self._commit(changes, message, signed=True)
        gpgkit.git(self.work, "push", "-q", str(self.bare), "main:refs/heads/main")
        return sha

    def merge(self, branch: str, number: int) -> str:
        """What GitHub's merge button does: a --no-ff merge commit signed by web-flow."""
        gpgkit.git(self.work, "fetch", "-q", str(self.bare),
                   f"+refs/heads/{branch}:refs/remotes/origin/{branch}")  # fmt: skip
        gpgkit.git(self.work, "checkout", "-q", "-B", "main", self.main())
        gpgkit.git(self.work, *self.keys.sign(self.keys.webflow), "merge", "-q", "--no-ff",
                   "-S", f"origin/{branch}", "-m", f"Merge pull request #{number} from {branch}")  # fmt: skip
        gpgkit.git(self.work, "push", "-q", str(self.bare), "main:refs/heads/main")
        return gpgkit.git(self.work, "rev-parse", "HEAD")

    def reset_main(self, sha: str) -> None:
        gpgkit.git(self.bare, "update-ref", "refs/heads/main", sha)

    def main(self) -> str:
        return gpgkit.git(self.bare, "rev-parse", "refs/heads/main")

    def ledger(self) -> Ledger:
        return Ledger(Git(self.bare))

    def ledger_tip(self) -> str | None:
        return self.ledger().tip()

    def entry(self, app: str) -> LedgerEntry | None:
        return self.ledger().read(app)

    def write_ledger(self, entries: list[LedgerEntry], signer: BotSigner, message: str) -> str:
        """A ledger commit made outside the bot, straight in the remote."""
        return self.ledger().record(entries, signer, message)

    def rewind_ledger(self, sha: str) -> None:
        gpgkit.git(self.bare, "update-ref", "refs/heads/sluice/ledger", sha)

    def _fetch_main(self) -> None:
        gpgkit.git(
            self.work, "fetch", "-q", str(self.bare), "+refs/heads/main:refs/remotes/origin/main"
        )

    def _commit(self, changes: dict[str, str | None], message: str, *, signed: bool) -> str:
        for name, content in changes.items():
            target = self.work / name
            if content is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
        gpgkit.git(self.work, "add", "-A")
        sign = self.keys.sign(self.keys.maintainer) if signed else ["-c", "commit.gpgsign=false"]
        gpgkit.git(self.work, *sign, "commit", "-q", "--allow-empty", "-m", message)
        return gpgkit.git(self.work, "rev-parse", "HEAD")


def build_gitops(tmp: Path, keys: DeployKeys) -> GitOps:
    work = gpgkit.init_repo(tmp / "work")
    files = {
        ".sluice.yaml": sluice_yaml(),
        "apps/staging/configmap.yaml": dump(configmap("staging-config", {"build": "main"})),
        **web_files(greeting="hello", replicas=2, password="web-initial-pw-0"),
        **api_files(mode="initial", token="api-initial-token-0"),
        **bulk_files("b", 12),
    }
    for rego in sorted((ROOT / "policies").glob("*.rego")):
        if not rego.name.endswith("_test.rego"):
            files[f"policies/{rego.name}"] = rego.read_text()
    gpgkit.commit(work, "GitOps layout", files=files, config=keys.sign(keys.maintainer))
    bare = tmp / "gitops.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return GitOps(work, bare, keys)


# -- the puller process ---------------------------------------------------------------------


class PullerProcess(SluiceProcess):
    """``sluice puller --config FILE --bind 127.0.0.1:PORT``."""

    name = "sluice puller"

    def __init__(self, config: Path, env: dict[str, str], log_path: Path) -> None:
        super().__init__(env, log_path)
        self.config = config
        self.session.headers["Authorization"] = f"Bearer {PULLER_TOKEN}"

    def start(self, timeout: float = 30) -> PullerProcess:
        args = ["puller", "--config", str(self.config), "--bind", f"127.0.0.1:{self.port}"]
        self._launch(args, timeout, 0.05)
        return self

    def app(self, name: str) -> dict[str, Any] | None:
        response = self.session.get(f"{self.url}/v1/apps/{name}", timeout=10)
        return response.json() if response.status_code == 200 else None

    def apps(self) -> dict[str, dict[str, Any]]:
        response = self.session.get(f"{self.url}/v1/apps", timeout=10)
        response.raise_for_status()
        return {a["name"]: a for a in response.json()["apps"]}

    def wake(self, app: str | None = None) -> None:
        body = {"app": app} if app else {}
        response = self.session.post(f"{self.url}/v1/wake", json=body, timeout=10)
        assert response.status_code == 202, response.text

    def wait_app(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 40
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.app(name)
            return status if status is not None and predicate(status) else None

        return wait_for(check, timeout, f"{name}: {what}", 0.1)


# -- the stack ------------------------------------------------------------------------------


@dataclass
class DeployStack:
    keys: DeployKeys
    gitops: GitOps
    gh: ghemu.GitHubEmulator
    kube: KubeEmulator
    server: SluiceServer
    puller: PullerProcess
    tmp: Path

    # -- pull requests

    def pull(self, branch: str, number: int, *, title: str | None = None) -> ghemu.Pull:
        return self.gh.add_pull(
            REPO,
            number=number,
            title=title or f"{branch}: change",
            base_sha=self.gitops.main(),
            head_ref=branch,
            head_sha=gpgkit.git(self.gitops.bare, "rev-parse", f"refs/heads/{branch}"),
        )

    def approve(self, pull: ghemu.Pull, by: str = "rita") -> None:
        self.gh.add_review(REPO, pull.number, by, commit_id=pull.head_sha)

    def merge(self, pull: ghemu.Pull) -> str:
        """Merge in git (web-flow signed), mark it merged, deliver the closed webhook."""
        sha = self.gitops.merge(pull.head_ref, pull.number)
        self.gh.merge_pull(REPO, pull.number, sha)
        payload = self.gh.pull_request_event(REPO, pull.number, action="closed")
        response = self.server.github("pull_request", payload)
        assert response.status_code == 202 and response.json()["status"] == "queued", response.text
        return sha

    def ship(self, branch: str, changes: dict[str, str | None], number: int, **kw: Any):
        """Branch, pull request, approval, merge: returns (pull, merge sha)."""
        self.gitops.branch(branch, changes, **kw)
        pull = self.pull(branch, number)
        self.approve(pull)
        return pull, self.merge(pull)

    def say(self, pull: ghemu.Pull, body: str, author: str = "dana") -> int:
        comment_id = self.gh.add_comment(REPO, pull.number, body, author=author)
        payload = self.gh.issue_comment_event(REPO, comment_id)
        response = self.server.github("issue_comment", payload)
        assert response.status_code == 202, response.text
        return comment_id

    # -- what a reviewer sees

    def bot_comments(self, number: int) -> list[str]:
        return [
            c.body
            for c in self.gh.comments(REPO, number)
            if c.author == BOT and MARKER not in c.body
        ]

    def wait_comment(
        self, number: int, *needles: str, timeout: float = 60, absent: str | None = None
    ) -> str:
        """The first bot comment on ``number`` (the report aside) holding every needle
        (and not ``absent``)."""

        def find() -> str | None:
            found = (b for b in self.bot_comments(number) if all(n in b for n in needles)
                     and not (absent and absent in b))  # fmt: skip
            return next(found, None)

        return wait_for(find, timeout, f"a bot comment on #{number} with {needles!r}", 0.1)

    def status(self, sha: str, context: str) -> ghemu.Status | None:
        latest = None
        for status in self.gh.statuses(REPO, sha):
            if status.context == context:
                latest = status
        return latest

    def wait_status(
        self, sha: str, context: str, state: str, timeout: float = 60, contains: str = ""
    ) -> ghemu.Status:
        def final() -> ghemu.Status | None:
            status = self.status(sha, context)
            ok = status is not None and status.state == state
            return status if ok and contains in (status.description or "") else None

        return wait_for(final, timeout, f"{context} = {state} on {sha[:7]}", 0.1)

    # -- the cluster

    def live(self, api_version: str, kind: str, name: str, namespace: str) -> dict | None:
        return self.kube.get_object(api_version, kind, name, namespace)

    def owned(self, app: str, api_version: str = "v1", kind: str = "ConfigMap") -> list[str]:
        """Names of live objects of one kind labelled as ``app``'s."""
        return sorted(
            o["metadata"]["name"]
            for o in self.kube.list_objects(api_version, kind)
            if (o["metadata"].get("labels") or {}).get(APP_LABEL) == app
        )

    def inventory(self, app: str) -> list[tuple[str, str, str]]:
        cm = self.kube.get_object("v1", "ConfigMap", f"sluice-inventory-{app}", "sluice-system")
        if cm is None:
            return []
        entries = yaml.safe_load(next(iter(cm["data"].values())))
        return sorted((e["kind"], e.get("namespace") or "", e["name"]) for e in entries)


def puller_config(
    tmp: Path, keys: DeployKeys, gitops: GitOps, kube: KubeEmulator, **extra: Any
) -> Path:
    token_file = tmp / "kube-token"
    token_file.write_text(kube.token)
    config = {
        "repo_url": str(gitops.bare),
        "apps": ["*"],
        "bot_keys": str(keys.bot_keys),
        "trusted_keys": str(keys.repo_keys),
        "data_dir": str(tmp / "puller-data"),
        # The puller trusts history up to the layout commit; everything after is verified.
        "trust_anchor": gpgkit.git(gitops.bare, "rev-list", "--max-parents=0", "main"),
        "interval_s": 2,
        "health_timeout_s": 20,
        "kube": {"host": kube.host, "token_file": str(token_file)},
        **extra,
    }
    path = tmp / "puller.yaml"
    path.write_text(dump(config))
    return path


@contextmanager
def _bot_puller_cluster(
    tmp: Path, keys: DeployKeys, gitops: GitOps, **forge_urls: str
) -> Iterator[tuple[KubeEmulator, SluiceServer, PullerProcess]]:
    """The Kubernetes API emulator, ``sluice serve`` and ``sluice puller``, wired together;
    ``forge_urls`` (``github_url`` / ``gitlab_url``) name the forge the bot talks to."""
    kube = KubeEmulator().start()
    for namespace in NAMESPACES:
        kube.add_namespace(namespace)
    data_dir = tmp / "bot-data"
    env = server_env(data_dir, keys=keys.repo_keys, **forge_urls)
    server = SluiceServer(env, tmp / "serve.log")
    puller_env = {
        "PATH": env["PATH"],
        "HOME": str(tmp / "puller-home"),
        "SLUICE_PULLER_TOKEN": PULLER_TOKEN,
        "SLUICE_BOT_EVENTS_URL": f"{server.url}/v1/puller/events",
    }
    puller = PullerProcess(puller_config(tmp, keys, gitops, kube), puller_env, tmp / "puller.log")
    server.env |= {
        "SLUICE_PULLER_URL": puller.url,
        "SLUICE_PULLER_TOKEN": PULLER_TOKEN,
        "SLUICE_SIGNING_METHOD": "gpg",
        "SLUICE_SIGNING_KEY": keys.bot,
        "SLUICE_GNUPGHOME": str(keys.bot_home),
        "SLUICE_REQUIRED_APPROVALS": "1",
    }
    try:
        with rollouts(kube):
            puller.start()
            server.start()
            yield kube, server, puller
    finally:
        server.stop()
        puller.stop()
        kube.stop()


@contextmanager
def deploy_stack(tmp: Path) -> Iterator[DeployStack]:
    keys = make_deploy_keys(tmp / "keys")
    gitops = build_gitops(tmp, keys)
    gh = ghemu.GitHubEmulator(bot_login=BOT, bot_token=GH_TOKEN).start()
    gh.add_repo(REPO, clone_url=str(gitops.bare))
    for user, role in (("dana", "write"), ("rita", "write"), ("alice", "write")):
        gh.set_permission(REPO, user, role)
    try:
        with _bot_puller_cluster(tmp, keys, gitops, github_url=gh.base_url) as running:
            kube, server, puller = running
            yield DeployStack(keys, gitops, gh, kube, server, puller, tmp)
    finally:
        gh.stop()
        keys.close()


# -- the same on GitLab ---------------------------------------------------------------------


@dataclass
class GitLabDeployStack:
    """The deploy stack with the GitLab emulator as the forge: merge requests, approvals,
    GitLab's unsigned merge commits, "Merge Request Hook" deliveries, notes and statuses."""

    keys: DeployKeys
    gitops: GitOps
    gl: glemu.GitLabEmulator
    project: glemu.Project
    users: dict[str, glemu.User]
    kube: KubeEmulator
    server: SluiceServer
    puller: PullerProcess
    tmp: Path

    def mr(self, branch: str, iid: int, *, author: str = "dana") -> glemu.MergeRequest:
        return self.gl.add_merge_request(
            self.project,
            iid=iid,
            title=f"{branch}: change",
            source_branch=branch,
            target_branch="main",
            sha=gpgkit.git(self.gitops.bare, "rev-parse", f"refs/heads/{branch}"),
            base_sha=self.gitops.main(),
            author=self.users[author],
        )

    def approve(self, mr: glemu.MergeRequest, by: str = "rita") -> None:
        self.gl.approve(mr, self.users[by])

    def merge(self, mr: glemu.MergeRequest, merge_commit_sha: str | None = None) -> str:
        """GitLab's merge button (or a merge already made in git), then the hook."""
        sha = self.gl.merge(mr, merge_commit_sha, user=self.users["rita"])
        payload = self.gl.merge_request_hook(mr, action="merge", user=self.users["rita"])
        response = self.server.gitlab("Merge Request Hook", payload)
        assert response.status_code == 202 and response.json()["status"] == "queued", response.text
        return sha

    def bot_notes(self, mr: glemu.MergeRequest) -> list[str]:
        return [
            n.body for n in self.gl.notes(mr) if n.author.username == BOT and MARKER not in n.body
        ]

    def wait_note(
        self, mr: glemu.MergeRequest, *needles: str, timeout: float = 60, absent: str | None = None
    ) -> str:
        """The first bot note on ``mr`` (the report aside) holding every needle (and not
        ``absent``)."""

        def find() -> str | None:
            found = (b for b in self.bot_notes(mr) if all(n in b for n in needles)
                     and not (absent and absent in b))  # fmt: skip
            return next(found, None)

        return wait_for(find, timeout, f"a bot note on !{mr.iid} with {needles!r}", 0.1)

    def wait_status(
        self, sha: str, name: str, state: str, timeout: float = 60
    ) -> glemu.CommitStatus:
        def final() -> glemu.CommitStatus | None:
            status = self.gl.latest_statuses(self.project, sha).get(name)
            return status if status is not None and status.state == state else None

        return wait_for(final, timeout, f"{name} = {state} on {sha[:7]}", 0.1)

    def live(self, api_version: str, kind: str, name: str, namespace: str) -> dict | None:
        return self.kube.get_object(api_version, kind, name, namespace)


@contextmanager
def gitlab_deploy_stack(tmp: Path) -> Iterator[GitLabDeployStack]:
    keys = make_deploy_keys(tmp / "keys")
    gitops = build_gitops(tmp, keys)
    gl = glemu.GitLabEmulator(token=GL_TOKEN, bot_username=BOT).start()
    project = gl.add_project(REPO, http_url=str(gitops.bare))
    users = {name: gl.add_user(name) for name in ("dana", "rita")}
    for user in users.values():
        gl.add_member(project, user, glemu.DEVELOPER)
    try:
        with _bot_puller_cluster(tmp, keys, gitops, gitlab_url=gl.url) as running:
            kube, server, puller = running
            yield GitLabDeployStack(keys, gitops, gl, project, users, kube, server, puller, tmp)
    finally:
        gl.stop()
        keys.close()

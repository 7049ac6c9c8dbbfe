"""A world for puller tests: a real GitOps repo with signed commits and a signed ledger,
the Kubernetes API emulator, a rollout "controller" and an HTTP receiver for bot events.

Everything real except the API server: git, gpg, the policies in /work/main/policies,
the Rego engine, the official kubernetes client and HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from bot.deploy.ledger import BotSigner, Ledger, LedgerEntry, SigningConfig
from bot.gitops import Git
from bot.puller.agent import PullerAgent
from bot.puller.config import PullerConfig, parse_puller_config
from bot.puller.server import build_agent
from tests import gpgkit
from tests.emulators.kube import KubeEmulator

POLICIES = Path(__file__).resolve().parent.parent / "policies"
TOKEN = "puller-test-token-5f2c"
SECRET_VALUE = "hunter2-do-not-leak"


@dataclass
class Keys:
    home: Path
    bot: str  # fingerprint of the bot's ledger signing key
    mallory: str  # a key nobody trusts
    dev: str  # a developer whose commits are trusted
    bot_keys: Path
    trusted_keys: Path

    def signer(self, fpr: str | None = None) -> BotSigner:
        return BotSigner(SigningConfig("gpg", fpr or self.bot, gnupg_home=self.home))

    def dev_signing(self) -> list[str]:
        return gpgkit.gpg_signing_config(self.home, self.dev)


def make_keys(tmp: Path) -> Keys:
    home = gpgkit.new_gnupghome(tmp / "gnupg")
    bot = gpgkit.make_gpg_key(home, "Sluice Bot <bot@sluice.invalid>")
    mallory = gpgkit.make_gpg_key(home, "Mallory <mallory@example.com>")
    dev = gpgkit.make_gpg_key(home, "Dev <dev@example.com>")
    bot_keys, trusted = tmp / "bot-keys", tmp / "trusted-keys"
    bot_keys.mkdir()
    trusted.mkdir()
    (bot_keys / "bot.asc").write_text(gpgkit.export_public(home, bot))
    (trusted / "dev.asc").write_text(gpgkit.export_public(home, dev))
    return Keys(home, bot, mallory, dev, bot_keys, trusted)


def sluice_yaml(
    *, self_heal: bool = False, mode: str = "all", apps: tuple[str, ...] = ("web",)
) -> str:
    entries: list[dict[str, Any]] = []
    for name in apps:
        app: dict[str, Any] = {"name": name, "path": f"apps/{name}", "namespace": name}
        if self_heal:
            app["self_heal"] = True
        entries.append(app)
    return yaml.safe_dump(
        {"apps": entries, "policy": {"paths": ["policies/"]}, "signatures": {"mode": mode}}
    )


def manifests(
    *, image: str = "nginx:1.27", greeting: str = "hello", app: str = "web"
) -> dict[str, str]:
    """The files of app ``app`` (default ``web``): its Namespace (named like the app),
    a ConfigMap, a Secret and a Deployment."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "labels": {"app.kubernetes.io/name": app}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {
                    "securityContext": {"runAsNonRoot": True},
                    "containers": [{"name": app, "image": image}],
                },
            },
        },
    }
    return {
        f"apps/{app}/namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {app}}}\n",
        f"apps/{app}/configmap.yaml": yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{app}-config"},
                "data": {"greeting": greeting},
            }
        ),
        f"apps/{app}/secret.yaml": yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{app}-secret"},
                "stringData": {"password": SECRET_VALUE},
            }
        ),
        f"apps/{app}/deployment.yaml": yaml.safe_dump(deployment),
    }


class EventReceiver:
    """The bot's ``POST /v1/puller/events`` on 127.0.0.1; records what arrives."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.fail_next = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                    else:
                        receiver.events.append(json.loads(body))
                        receiver.auth.append(self.headers.get("Authorization", ""))
                self.send_response(503 if failing else 202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1/puller/events"

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["type"] == kind]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def rollouts(emu: KubeEmulator) -> Iterator[None]:
    """Play a Deployment controller: every Deployment's rollout completes at once."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.02):
            for obj in emu.list_objects("apps/v1", "Deployment"):
                meta, status = obj["metadata"], obj.get("status") or {}
                generation = meta.get("generation", 1)
                if status.get("observedGeneration") == generation:
                    continue
                replicas = obj["spec"].get("replicas", 1)
                emu.set_status(
                    "apps/v1",
                    "Deployment",
                    meta["name"],
                    {
                        "observedGeneration": generation,
                        "replicas": replicas,
                        "updatedReplicas": replicas,
                        "readyReplicas": replicas,
                        "availableReplicas": replicas,
                    },
                    namespace=meta["namespace"],
                )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass
class World:
    tmp: Path
    keys: Keys
    origin: Path
    emu: KubeEmulator
    receiver: EventReceiver
    data_dir: Path
    anchor: str = ""  # the puller's trust_anchor: the repository's first commit
    environ: dict[str, str] = field(default_factory=dict)  # more of the puller's environment
    extra_config: dict[str, Any] = field(default_factory=dict)

    # -- the GitOps repository

    def commit(self, files: dict[str, str], message: str = "change", *, signed: bool = True) -> str:
        return gpgkit.commit(
            self.origin, message, files=files, config=self.keys.dev_signing() if signed else ()
        )

    def record(
        self,
        revision: str,
        *,
        signer: str | None = None,
        pr: int = 7,
        app: str = "web",
        **fields: Any,
    ) -> str:
        fields.setdefault("gates", {"signatures": "pass", "policy": "pass", "render": "pass"})
        entry = LedgerEntry(app=app, revision=revision, pr=pr, approved_by=["alice"], **fields)
        return Ledger(Git(self.origin)).record([entry], self.keys.signer(signer), f"deploy {pr}")

    # -- the puller

    def config(self, **overrides: Any) -> PullerConfig:
        token_file = self.tmp / "kube-token"
        token_file.write_text(self.emu.token)
        raw = {
            "repo_url": str(self.origin),
            "apps": ["web*"],
            "bot_keys": str(self.keys.bot_keys),
            "trusted_keys": str(self.keys.trusted_keys),
            "data_dir": str(self.data_dir),
            "trust_anchor": self.anchor,
            "health_timeout_s": 5,
            "kube": {"host": self.emu.host, "token_file": str(token_file)},
            **self.extra_config,
            **overrides,
        }
        environ = {
            "SLUICE_PULLER_TOKEN": TOKEN,
            "SLUICE_BOT_EVENTS_URL": self.receiver.url,
            **self.environ,
        }
        return parse_puller_config(yaml.safe_dump(raw), environ, source="puller.yaml")

    def agent(self, **overrides: Any) -> PullerAgent:
        return build_agent(self.config(**overrides), health_poll_s=0.05)

    # -- the cluster

    def live(self, kind: str, name: str) -> dict[str, Any] | None:
        api_version = {"ConfigMap": "v1", "Secret": "v1", "Deployment": "apps/v1"}[kind]
        return self.emu.get_object(api_version, kind, name, "web")


@contextmanager
def world(
    tmp: Path,
    keys: Keys,
    *,
    self_heal: bool = False,
    mode: str = "all",
    apps: tuple[str, ...] = ("web",),
) -> Iterator[World]:
    origin = gpgkit.init_repo(tmp / "gitops")
    shutil.copytree(POLICIES, origin / "policies", ignore=shutil.ignore_patterns("*_test.rego"))
    emu = KubeEmulator().start()
    receiver = EventReceiver()
    w = World(tmp, keys, origin, emu, receiver, tmp / "puller-data")
    files = {".sluice.yaml": sluice_yaml(self_heal=self_heal, mode=mode, apps=apps)}
    for app in apps:
        files.update(manifests(app=app))
    w.anchor = w.commit(files, "init")
    try:
        with rollouts(emu):
            yield w
    finally:
        receiver.close()
        emu.stop()

"""Shared parts for end-to-end bot tests and bench/webhooks.py.

* ``build_gitops_repo``: a real GitOps repo (three plain apps, the default policy
  library, OpenPGP-signed commits) published as a bare repository, with one branch
  per scenario; the bare path is the clone URL the webhook payloads carry.
* ``SluiceServer``: the real ``sluice serve`` (gunicorn + job process) in its own
  process group, configured from environment variables only.
* ``github_delivery`` / ``gitlab_delivery``: signed webhook requests.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from bot.forge.webhooks import github_signature
from tests.gpgkit import (
    commit,
    export_public,
    git,
    gpg_signing_config,
    init_repo,
    kill_agent,
    make_gpg_key,
    new_gnupghome,
)

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
SLUICE = VENV_BIN / "sluice"

GH_SECRET = "gh-e2e-hook-secret-5b0c7d"
GH_TOKEN = "ghp_e2eTokenValueNeverLogged0001"
GL_SECRET = "gl-e2e-hook-secret-a1e9f4"
GL_TOKEN = "glpat-e2eTokenNeverLogged02"
#: The Secret value the "secret" branch writes (never to appear in a comment, status or log).
SECRET_VALUE = "hunter2-Sup3rS3cret-db-password"
SERVER_SECRETS = (GH_SECRET, GH_TOKEN, GL_SECRET, GL_TOKEN)


# -- the GitOps repository ------------------------------------------------------------------


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}


def deployment(name: str, *, image: str, replicas: int = 2) -> dict[str, Any]:
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
                    "containers": [
                        {
                            "name": "main",
                            "image": image,
                            "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ],
                },
            },
        },
    }


def secret(value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "labels": _labels("vault")},
        "type": "Opaque",
        "data": {"password": base64.b64encode(value.encode()).decode()},
    }


def _dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


@dataclass
class GitOpsRepo:
    """The published repo: ``bare`` is the clone URL; ``sha`` maps branch → head SHA."""

    bare: Path
    keys: Path
    sha: dict[str, str] = field(default_factory=dict)

    @property
    def clone_url(self) -> str:
        return str(self.bare)


def build_gitops_repo(workdir: Path) -> GitOpsRepo:
    """Branches (all from ``main``):

    clean → clean2 (two signed pushes that only scale ``web``), deny → deny2 (``web``
    on an image with the ``latest`` tag, then one more change, still denied),
    unsigned (an unsigned commit scaling ``worker``), secret (a new Secret value).
    """
    home = new_gnupghome(workdir / "gnupg")
    fpr = make_gpg_key(home, "GitOps Maintainer <maintainer@e2e.sluice.invalid>")
    sign = gpg_signing_config(home, fpr)
    keys = workdir / "keys"
    keys.mkdir()
    (keys / "maintainer.asc").write_text(export_public(home, fpr))
    (keys / "allowed_signers").write_text("")
    work = init_repo(workdir / "work")
    config = {
        "apps": [
            {"name": "web", "path": "apps/web", "renderer": "plain", "namespace": "web"},
            {"name": "worker", "path": "apps/worker", "renderer": "plain", "namespace": "work"},
            {"name": "vault", "path": "apps/vault", "renderer": "plain", "namespace": "vault"},
        ],
        "policy": {"paths": ["policies/"]},
        "signatures": {"mode": "all"},
    }
    files = {
        ".sluice.yaml": _dump(config),
        "apps/web/deployment.yaml": _dump(deployment("web", image="ghcr.io/acme/web:1.0.0")),
        "apps/worker/deployment.yaml": _dump(
            deployment("worker", image="ghcr.io/acme/worker:2.1.0")
        ),
        "apps/vault/secret.yaml": _dump(secret("initial-value-0")),
    }
    for rego in sorted((ROOT / "policies").glob("*.rego")):
        if not rego.name.endswith("_test.rego"):
            files[f"policies/{rego.name}"] = rego.read_text()
    repo = GitOpsRepo(bare=workdir / "gitops.git", keys=keys)
    repo.sha["main"] = commit(work, "GitOps layout", files=files, config=sign)

    def branch(name: str, start: str, message: str, changes: dict[str, str], signed: bool = True):
        git(work, "checkout", "-q", "-B", name, start)
        repo.sha[name] = commit(work, message, files=changes, config=sign if signed else ())

    web = "apps/web/deployment.yaml"
    latest = "ghcr.io/acme/web:latest"
    branch(
        "clean",
        "main",
        "web: 3 replicas",
        {web: _dump(deployment("web", image="ghcr.io/acme/web:1.0.0", replicas=3))},
    )
    branch(
        "clean2",
        "clean",
        "web: 4 replicas",
        {web: _dump(deployment("web", image="ghcr.io/acme/web:1.0.0", replicas=4))},
    )
    branch("deny", "main", "web: track latest", {web: _dump(deployment("web", image=latest))})
    branch(
        "deny2",
        "deny",
        "web: latest, 5 replicas",
        {web: _dump(deployment("web", image=latest, replicas=5))},
    )
    branch(
        "unsigned",
        "main",
        "worker: 3 replicas",
        {
            "apps/worker/deployment.yaml": _dump(
                deployment("worker", image="ghcr.io/acme/worker:2.1.0", replicas=3)
            )
        },
        signed=False,
    )
    branch(
        "secret",
        "main",
        "vault: rotate the db password",
        {"apps/vault/secret.yaml": _dump(secret(SECRET_VALUE))},
    )
    git(work, "checkout", "-q", "main")
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work), str(repo.bare)], check=True, capture_output=True
    )
    kill_agent(home)
    return repo


# -- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def server_env(
    data_dir: Path,
    *,
    github_url: str | None = None,
    gitlab_url: str | None = None,
    keys: Path | None = None,
    **extra: str,
) -> dict[str, str]:
    """The whole environment of a ``sluice serve`` process: nothing else is inherited."""
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(data_dir.parent / "home"),
        "SLUICE_DATA_DIR": str(data_dir),
    }
    if github_url is not None:
        env |= {
            "SLUICE_GITHUB_WEBHOOK_SECRET": GH_SECRET,
            "SLUICE_GITHUB_TOKEN": GH_TOKEN,
            "SLUICE_GITHUB_API_URL": github_url,
        }
    if gitlab_url is not None:
        env |= {
            "SLUICE_GITLAB_URL": gitlab_url,
            "SLUICE_GITLAB_TOKEN": GL_TOKEN,
            "SLUICE_GITLAB_WEBHOOK_SECRET": GL_SECRET,
        }
    if keys is not None:
        env["SLUICE_TRUSTED_KEYS"] = str(keys)
    return env | extra


class SluiceProcess:
    """A ``sluice`` subcommand on a free port in its own process group, logging to a file."""

    name = "sluice"
    probe = "/healthz"
    stop_grace_s = 30.0

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()

    def _launch(self, args: list[str], timeout: float, interval: float) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SLUICE), *args],
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
                cwd="/",
            )
        wait_for(self._answers, timeout, f"{self.name} to answer {self.probe}", interval)

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited early:\n{self.log()[-3000:]}")
        try:
            return requests.get(f"{self.url}{self.probe}", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def kill(self) -> None:
        """SIGKILL the whole process group, no goodbye: as the OOM killer or a node failure."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(self.stop_grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class SluiceServer(SluiceProcess):
    """``sluice serve --bind 127.0.0.1:PORT [--config FILE]``."""

    name = "sluice serve"
    probe = "/readyz"
    stop_grace_s = 40.0

    def __init__(self, env: Mapping[str, str], log_path: Path, config: Path | None = None):
        super().__init__(env, log_path)
        self.config = config
        Path(self.env["HOME"]).mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 60) -> SluiceServer:
        args = ["serve", "--bind", f"127.0.0.1:{self.port}"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        self._launch(args, timeout, 0.1)
        return self

    def kill(self) -> None:
        """SIGKILL the supervisor and every child (gunicorn, its worker, the job process)."""
        super().kill()
        self.session = requests.Session()

    # -- deliveries

    def github(
        self, event: str, payload: Any, *, delivery: str | None = None, **kwargs: Any
    ) -> requests.Response:
        return self.session.post(
            f"{self.url}/webhooks/github",
            **github_delivery(event, payload, delivery=delivery, **kwargs),
            timeout=30,
        )

    def gitlab(
        self, event: str, payload: Any, *, delivery: str | None = None, token: str = GL_SECRET
    ) -> requests.Response:
        return self.session.post(
            f"{self.url}/webhooks/gitlab",
            **gitlab_delivery(event, payload, delivery=delivery, token=token),
            timeout=30,
        )


def github_delivery(
    event: str,
    payload: Any,
    *,
    delivery: str | None = None,
    secret: str = GH_SECRET,
    body: bytes | None = None,
) -> dict[str, Any]:
    """``requests`` keyword arguments for a GitHub delivery signed with ``secret``."""
    raw = body if body is not None else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": github_signature(secret, raw),
    }
    return {"data": raw, "headers": headers}


def gitlab_delivery(
    event: str, payload: Any, *, delivery: str | None = None, token: str = GL_SECRET
) -> dict[str, Any]:
    headers = {
        "Content-Type": "application/json",
        "X-Gitlab-Event": event,
        "X-Gitlab-Event-UUID": delivery or str(uuid.uuid4()),
        "X-Gitlab-Token": token,
    }
    return {"data": json.dumps(payload).encode(), "headers": headers}


def copy_keys(keys: Path, dest: Path) -> Path:
    shutil.copytree(keys, dest)
    return dest

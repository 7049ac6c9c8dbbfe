"""The puller's settings: one YAML file plus a few environment variables.

Example::

    repo_url: https://github.com/org/gitops.git
    tracked_branch: main              # default main
    ledger_branch: sluice/ledger      # default sluice/ledger
    apps: [web-prod, "api-*"]         # names or fnmatch globs this puller owns
    bot_keys: /etc/sluice/bot-keys    # *.asc + allowed_signers: who may sign the ledger
    trusted_keys: /etc/sluice/keys    # who may sign the revision's commits
    trust_anchor: 0123abcd...         # full SHA: history up to it is trusted (required)
    interval_s: 300
    health_timeout_s: 300
    history_limit: 10
    data_dir: /var/lib/sluice
    inventory_namespace: sluice-system
    max_prune_ratio: 0.5
    policy_engine: regorus            # regorus | regopy
    kube: {host: https://..., token_file: ..., ca_file: ...}   # optional
    leader_election: {lease_name: sluice-puller, namespace: sluice-system}   # optional
    # also lease_duration_s: 15, renew_deadline_s: 10, retry_period_s: 2 (controller-runtime's)

Environment: ``SLUICE_PULLER_TOKEN`` (API bearer, also sent to the bot),
``SLUICE_BOT_EVENTS_URL`` (where events go), ``SLUICE_GIT_USERNAME`` and
``SLUICE_GIT_TOKEN`` (fetch credentials), ``SLUICE_FINGERPRINT_KEY`` or
``SLUICE_FINGERPRINT_KEY_FILE`` (the bot's Secret fingerprint key); with ``leader_election``, ``SLUICE_PULLER_ID``
(this replica's identity, default the host name) and ``SLUICE_PULLER_ADVERTISE_URL``
(where the other replicas reach this one's API to pass wakes on). Without a ``kube`` section the
in-cluster service account is used, or ``KUBECONFIG`` when it is set.
Relative paths are relative to the config file. Secrets are kept out of ``repr``.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config

from bot.config import ConfigError, load_yaml_text
from bot.config.storage import StorageSettings
from bot.deploy.ledger import DEFAULT_BRANCH

POLICY_ENGINES = ("regorus", "regopy")
_FIELDS = frozenset(
    {
        "repo_url", "tracked_branch", "ledger_branch", "apps", "bot_keys", "trusted_keys",
        "trust_anchor",
        "interval_s", "health_timeout_s", "history_limit", "data_dir", "inventory_namespace",
        "max_prune_ratio", "policy_engine", "kube", "leader_election",
    }
)  # fmt: skip
_KUBE_FIELDS = frozenset({"host", "token_file", "ca_file"})
_ELECTION_FIELDS = frozenset(
    {"lease_name", "namespace", "lease_duration_s", "renew_deadline_s", "retry_period_s"}
)
_FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


@dataclass(frozen=True)
class KubeSettings:
    """An explicit API server; None in :class:`PullerConfig` means in-cluster or KUBECONFIG."""

    host: str
    token_file: Path | None = None
    ca_file: Path | None = None


@dataclass(frozen=True)
class LeaderElection:
    """Run several replicas: one leads (writes), the others answer and pass wakes on."""

    lease_name: str
    namespace: str
    identity: str
    advertise_url: str | None = None
    # controller-runtime's LeaseDuration, RenewDeadline and RetryPeriod.
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0


@dataclass(frozen=True)
class PullerConfig:
    repo_url: str = field(repr=False)  # may carry userinfo
    apps: tuple[str, ...]
    bot_keys: Path
    trusted_keys: Path
    data_dir: Path
    trust_anchor: str
    tracked_branch: str = "main"
    ledger_branch: str = DEFAULT_BRANCH
    interval_s: float = 300.0
    health_timeout_s: float = 300.0
    history_limit: int = 10
    inventory_namespace: str = "sluice-system"
    max_prune_ratio: float = 0.5
    policy_engine: str = "regorus"
    kube: KubeSettings | None = None
    leader_election: LeaderElection | None = None
    api_token: str | None = field(default=None, repr=False)
    events_url: str | None = None
    git_auth: tuple[str, str] | None = field(default=None, repr=False)
    # The Secret fingerprint key; None: one kept in data_dir (one per replica).
    fingerprint_key: bytes | None = field(default=None, repr=False)
    source: str = "puller config"

    @property
    def tracked_ref(self) -> str:
        return f"refs/heads/{self.tracked_branch}"

    @property
    def ledger_ref(self) -> str:
        return f"refs/heads/{self.ledger_branch}"


def load_puller_config(path: Path, environ: Mapping[str, str] | None = None) -> PullerConfig:
    """Read and validate ``path``; errors name the file and the field."""
    environ = os.environ if environ is None else environ
    source = str(path)
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read ({exc.strerror or exc})") from None
    return parse_puller_config(text, environ, source=source, base_dir=Path(path).parent)


def parse_puller_config(
    text: str | bytes,
    environ: Mapping[str, str],
    *,
    source: str = "puller config",
    base_dir: Path = Path("."),
) -> PullerConfig:
    raw = load_yaml_text(text, source)
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    unknown = sorted(str(k) for k in raw if k not in _FIELDS)
    if unknown:
        raise ConfigError(f"{source}: unknown field {unknown[0]!r}")
    fields = _Fields(raw, source, base_dir)
    return PullerConfig(
        repo_url=fields.string("repo_url"),
        tracked_branch=fields.branch("tracked_branch", "main"),
        ledger_branch=fields.branch("ledger_branch", DEFAULT_BRANCH),
        apps=fields.app_patterns(),
        bot_keys=fields.path("bot_keys"),
        trusted_keys=fields.path("trusted_keys"),
        trust_anchor=fields.trust_anchor(),
        data_dir=fields.path("data_dir"),
        interval_s=fields.number("interval_s", 300.0, minimum=1.0),
        health_timeout_s=fields.number("health_timeout_s", 300.0, minimum=0.0),
        history_limit=int(fields.number("history_limit", 10, minimum=1, integer=True)),
        inventory_namespace=fields.string("inventory_namespace", "sluice-system"),
        max_prune_ratio=fields.ratio("max_prune_ratio", 0.5),
        policy_engine=fields.choice("policy_engine", POLICY_ENGINES, "regorus"),
        kube=fields.kube(),
        leader_election=fields.leader_election(environ),
        api_token=environ.get("SLUICE_PULLER_TOKEN") or None,
        events_url=_events_url(environ.get("SLUICE_BOT_EVENTS_URL")),
        git_auth=_git_auth(environ),
        fingerprint_key=_fingerprint_key(environ),
        source=source,
    )


def _fingerprint_key(environ: Mapping[str, str]) -> bytes | None:
    """``SLUICE_FINGERPRINT_KEY`` or ``SLUICE_FINGERPRINT_KEY_FILE``, read as the bot reads
    them: with the bot's key every replica and the bot fingerprint a Secret alike."""
    names = ("SLUICE_FINGERPRINT_KEY", "SLUICE_FINGERPRINT_KEY_FILE")
    return StorageSettings.from_env({n: environ[n] for n in names if n in environ}).fingerprint_key


@dataclass
class _Fields:
    raw: dict[str, Any]
    source: str
    base_dir: Path

    def _where(self, name: str) -> str:
        return f"{self.source}: {name}"

    def string(self, name: str, default: str | None = None) -> str:
        value = self.raw.get(name, default)
        if value is None:
            raise ConfigError(f"{self._where(name)}: is required")
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self._where(name)}: must be a non-empty string")
        return value.strip()

    def branch(self, name: str, default: str) -> str:
        value = self.string(name, default)
        if value.startswith(("-", "/", "refs/")) or ".." in value or " " in value:
            raise ConfigError(f"{self._where(name)}: {value!r} is not a branch name")
        return value

    def path(self, name: str) -> Path:
        path = Path(self.string(name)).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def number(self, name: str, default: float, *, minimum: float, integer: bool = False) -> float:
        value = self.raw.get(name, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"{self._where(name)}: must be {kind}")
        if value < minimum:
            raise ConfigError(f"{self._where(name)}: must be at least {minimum:g}")
        return value

    def ratio(self, name: str, default: float) -> float:
        value = self.number(name, default, minimum=0.0)
        if value > 1:
            raise ConfigError(f"{self._where(name)}: must be between 0 and 1")
        return float(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.raw.get(name, default)
        if value not in choices:
            raise ConfigError(f"{self._where(name)}: must be one of {', '.join(choices)}")
        return value

    def trust_anchor(self) -> str:
        """The commit the signature chain starts from: a full SHA, never a ref that moves."""
        value = self.raw.get("trust_anchor")
        if value is None:
            raise ConfigError(
                f"{self._where('trust_anchor')}: is required: the full SHA of the last commit "
                "whose history you trust; every commit after it must be signed "
                "(README: 'The signature chain and trust_anchor')"
            )
        text = str(value).strip().lower() if isinstance(value, str) else ""
        if not _FULL_SHA.match(text):
            raise ConfigError(
                f"{self._where('trust_anchor')}: {value!r} is not a full commit SHA "
                "(40 or 64 hex digits; a branch, tag or short SHA could point elsewhere later)"
            )
        return text

    def app_patterns(self) -> tuple[str, ...]:
        value = self.raw.get("apps")
        if value is None:
            raise ConfigError(f"{self._where('apps')}: is required (app names or globs)")
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise ConfigError(f"{self._where('apps')}: must be a non-empty list of names or globs")
        return tuple(v.strip() for v in value)

    def leader_election(self, environ: Mapping[str, str]) -> LeaderElection | None:
        value = self.raw.get("leader_election")
        if value is None:
            return None
        where = self._where("leader_election")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a mapping with lease_name and namespace")
        unknown = sorted(str(k) for k in value if k not in _ELECTION_FIELDS)
        if unknown:
            raise ConfigError(f"{where}: unknown field {unknown[0]!r}")
        nested = _Fields(value, where, self.base_dir)
        url = environ.get("SLUICE_PULLER_ADVERTISE_URL") or None
        if url is not None and not url.startswith(("https://", "http://")):
            raise ConfigError("SLUICE_PULLER_ADVERTISE_URL: must be an http(s) URL")
        return LeaderElection(
            lease_name=nested.string("lease_name", "sluice-puller"),
            namespace=nested.string(
                "namespace", self.raw.get("inventory_namespace") or "sluice-system"
            ),
            identity=environ.get("SLUICE_PULLER_ID") or socket.gethostname(),
            advertise_url=url,
            **nested.lease_timings(),
        )

    def lease_timings(self) -> dict[str, float]:
        timings = {
            "lease_duration_s": self.number("lease_duration_s", 15, minimum=1, integer=True),
            "renew_deadline_s": self.number("renew_deadline_s", 10.0, minimum=0.1),
            "retry_period_s": self.number("retry_period_s", 2.0, minimum=0.1),
        }
        if not (
            timings["retry_period_s"] < timings["renew_deadline_s"] < timings["lease_duration_s"]
        ):
            raise ConfigError(
                f"{self._where('lease_duration_s')}: need retry_period_s < renew_deadline_s"
                " < lease_duration_s"
            )
        return timings

    def kube(self) -> KubeSettings | None:
        value = self.raw.get("kube")
        if value is None:
            return None
        where = self._where("kube")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a mapping with host, token_file, ca_file")
        unknown = sorted(str(k) for k in value if k not in _KUBE_FIELDS)
        if unknown:
            raise ConfigError(f"{where}: unknown field {unknown[0]!r}")
        nested = _Fields(value, where, self.base_dir)
        host = nested.string("host")
        if not host.startswith(("https://", "http://")):
            raise ConfigError(f"{where}: host: must be an http(s) URL")
        token_file = nested.path("token_file") if "token_file" in value else None
        ca_file = nested.path("ca_file") if "ca_file" in value else None
        return KubeSettings(host=host.rstrip("/"), token_file=token_file, ca_file=ca_file)


def _events_url(value: str | None) -> str | None:
    if not value:
        return None
    if not value.startswith(("https://", "http://")):
        raise ConfigError("SLUICE_BOT_EVENTS_URL: must be an http(s) URL")
    return value


def _git_auth(environ: Mapping[str, str]) -> tuple[str, str] | None:
    user = environ.get("SLUICE_GIT_USERNAME") or ""
    token = environ.get("SLUICE_GIT_TOKEN") or ""
    if bool(user) != bool(token):
        raise ConfigError("SLUICE_GIT_USERNAME and SLUICE_GIT_TOKEN must be set together")
    return (user, token) if user else None


def make_api_client(config: PullerConfig) -> kubernetes.client.ApiClient:
    """The official client for the configured cluster: explicit, KUBECONFIG, or in-cluster."""
    configuration = kubernetes.client.Configuration()
    kube = config.kube
    if kube is not None:
        configuration.host = kube.host
        if kube.token_file is not None:
            try:
                token = kube.token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"{config.source}: kube: token_file: cannot read ({exc.strerror or exc})"
                ) from None
            configuration.api_key = {"authorization": f"Bearer {token}"}
        if kube.ca_file is not None:
            configuration.ssl_ca_cert = str(kube.ca_file)
    elif os.environ.get("KUBECONFIG"):
        kubernetes.config.load_kube_config(client_configuration=configuration)
    else:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException as exc:
            raise ConfigError(
                f"{config.source}: no kube section, no KUBECONFIG and not in a cluster ({exc})"
            ) from None
    return kubernetes.client.ApiClient(configuration)

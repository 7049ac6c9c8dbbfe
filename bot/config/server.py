"""The bot server's own settings: environment variables plus an optional YAML file.

The environment alone is enough to start (``SLUICE_DATA_DIR`` plus one forge); the
file adds per-repo settings, Atlantis-allowlist-like::

    repos:
      - match: "github:org/*"          # fnmatch glob on the full name, forge prefix optional
        commands:
          /sync: {permission: write, users: [alice], teams: [org/deployers]}
        policy_owners: {users: [carol], teams: [org/security]}
        draft_previews: true
        policy_engine: regorus          # regorus | regopy | opa
        opa_url: http://opa:8181
        required_approvals: 2           # default: SLUICE_REQUIRED_APPROVALS (1)
        tracked_branch: main            # merges into it deploy
        ledger_branch: sluice/ledger
        deploy_branch: sluice/approved  # moved to each approved merge; default off
        repo_urls: ["https://github.com/org/fleet*"]  # this repo in Argo CD / Flux sources

Deploys (merge-to-deploy) read ``SLUICE_PULLER_URL`` / ``SLUICE_PULLER_TOKEN``, the
bot's signing key (``SLUICE_SIGNING_METHOD`` / ``SLUICE_SIGNING_KEY`` /
``SLUICE_GNUPGHOME``) and ``SLUICE_REQUIRED_APPROVALS``. Direct pushes are never
deployed: only merged pull requests, whose approvals can be checked.

The first matching entry wins; a repo that matches none gets the defaults.
Secrets live only in fields excluded from ``repr`` and never appear in errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bot.cachesize import (
    DEFAULT_EXPORT_MAX_BYTES,
    DEFAULT_RENDER_MAX_BYTES,
    EXPORT_ENV,
    RENDER_ENV,
    CacheSizeError,
    max_bytes,
)
from bot.config.repo import ConfigError
from bot.config.repo_settings import (
    DEFAULT_COMMAND_PERMISSIONS,
    DEFAULT_REPO_SETTINGS,
    DEFAULT_TRACKED_BRANCH,
    FALLBACK_PERMISSION,
    FORGES,
    CommandRule,
    ForgeName,
    PolicyOwners,
    RepoSettings,
)
from bot.config.server_file import (
    MAX_REQUIRED_APPROVALS,
    ServerFile,
    check_config_file,
    load_repo_settings,
    load_server_file,
    load_server_file_defaults,
)
from bot.config.signing import SigningConfig
from bot.config.storage import StorageSettings
from bot.errors import LedgerError

__all__ = [
    "DEFAULT_COMMAND_PERMISSIONS",
    "DEFAULT_REPO_SETTINGS",
    "DEFAULT_TRACKED_BRANCH",
    "FALLBACK_PERMISSION",
    "FORGES",
    "MAX_REQUIRED_APPROVALS",
    "CommandRule",
    "ForgeName",
    "GitHubSettings",
    "GitLabSettings",
    "PolicyOwners",
    "RepoSettings",
    "ServerConfig",
    "ServerFile",
    "check_config_file",
    "load_repo_settings",
    "load_server_file",
    "load_server_file_defaults",
]

DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_GITLAB_URL = "https://gitlab.com"
DEFAULT_WORKERS = 4
MAX_WORKERS = 64
DEFAULT_REQUIRED_APPROVALS = 1


@dataclass(frozen=True)
class GitHubSettings:
    api_url: str
    webhook_secret: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    app_id: str | None = None
    app_private_key_file: Path | None = None
    app_installation_id: int | None = None

    @property
    def uses_app(self) -> bool:
        return self.app_id is not None


@dataclass(frozen=True)
class GitLabSettings:
    url: str
    webhook_secret: str = field(repr=False)
    token: str = field(repr=False)


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    github: GitHubSettings | None = None
    gitlab: GitLabSettings | None = None
    #: Why a forge is off, e.g. {"gitlab": "SLUICE_GITLAB_WEBHOOK_SECRET is not set"}.
    disabled: Mapping[str, str] = field(default_factory=dict)
    #: Forges that are off although some of their variables are set (a misconfiguration).
    misconfigured: frozenset[str] = frozenset()
    trusted_keys: Path | None = None
    workers: int = DEFAULT_WORKERS
    #: SQLite ``synchronous`` for webhook intake. NORMAL (WAL): an acknowledged delivery
    #: survives a crash of Sluice; FULL also survives a power cut, at about half the rate.
    db_synchronous: Literal["FULL", "NORMAL"] = "NORMAL"
    bot_login: str | None = None
    public_url: str | None = None
    repos: tuple[RepoSettings, ...] = ()
    config_file: Path | None = None
    #: The in-cluster puller's API; None: no puller to wake (it still polls the ledger).
    puller_url: str | None = None
    #: Shared secret for the puller API and for ``POST /v1/puller/events``.
    puller_token: str | None = field(default=None, repr=False)
    #: The bot's ledger signing key; None: deploys are off (nothing can be approved).
    signing: SigningConfig | None = None
    required_approvals: int = DEFAULT_REQUIRED_APPROVALS
    #: SQLite or PostgreSQL, the shared fingerprint key, this replica's name.
    storage: StorageSettings = field(default_factory=StorageSettings)
    #: Whether a direct push to a tracked branch deploys (when its gates pass).

    @classmethod
    def from_env(cls, environ: Mapping[str, str], config_file: Path | None = None) -> ServerConfig:
        env = {k: v.strip() for k, v in environ.items() if k.startswith("SLUICE_") and v.strip()}
        data_dir = env.get("SLUICE_DATA_DIR")
        if not data_dir:
            raise ConfigError(
                "SLUICE_DATA_DIR is not set: it names the directory for the job database and caches"
            )
        _check_cache_sizes(env)
        disabled: dict[str, str] = {}
        github = _github_from_env(env, disabled)
        gitlab = _gitlab_from_env(env, disabled)
        return cls(
            data_dir=Path(data_dir),
            github=github,
            gitlab=gitlab,
            disabled=disabled,
            misconfigured=frozenset(f for f in disabled if _mentions(env, f)),
            trusted_keys=_trusted_keys(env.get("SLUICE_TRUSTED_KEYS")),
            workers=_workers(env.get("SLUICE_WORKERS")),
            db_synchronous=_synchronous(env.get("SLUICE_DB_SYNCHRONOUS")),
            bot_login=env.get("SLUICE_BOT_LOGIN"),
            public_url=env.get("SLUICE_PUBLIC_URL", "").rstrip("/") or None,
            repos=load_repo_settings(config_file) if config_file else (),
            config_file=config_file,
            puller_url=_puller_url(env),
            puller_token=env.get("SLUICE_PULLER_TOKEN"),
            signing=_signing(environ),
            required_approvals=_required_approvals(env.get("SLUICE_REQUIRED_APPROVALS")),
            storage=StorageSettings.from_env(environ),
        )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "sluice.db"

    def forge_enabled(self, forge: str) -> bool:
        return (forge == "github" and self.github is not None) or (
            forge == "gitlab" and self.gitlab is not None
        )

    def webhook_secret(self, forge: str) -> str | None:
        settings = self.github if forge == "github" else self.gitlab if forge == "gitlab" else None
        return settings.webhook_secret if settings else None

    def repo_settings(self, forge: str, full_name: str) -> RepoSettings:
        """Settings of the first ``repos`` entry matching the repo, else the defaults."""
        return next((r for r in self.repos if r.matches(forge, full_name)), DEFAULT_REPO_SETTINGS)

    def approvals_required(self, settings: RepoSettings) -> int:
        if settings.required_approvals is not None:
            return settings.required_approvals
        return self.required_approvals

    @property
    def deploys_enabled(self) -> bool:
        """Merges can be promoted only when the bot can sign ledger commits."""
        return self.signing is not None


def _github_from_env(env: Mapping[str, str], disabled: dict[str, str]) -> GitHubSettings | None:
    secret = env.get("SLUICE_GITHUB_WEBHOOK_SECRET")
    token = env.get("SLUICE_GITHUB_TOKEN")
    app_id = env.get("SLUICE_GITHUB_APP_ID")
    key_file = env.get("SLUICE_GITHUB_APP_PRIVATE_KEY_FILE")
    installation = env.get("SLUICE_GITHUB_APP_INSTALLATION_ID")
    if not any((secret, token, app_id, key_file)):
        disabled["github"] = "GitHub is not configured (SLUICE_GITHUB_* variables are not set)"
        return None
    if app_id and not key_file:
        raise ConfigError(
            "SLUICE_GITHUB_APP_ID is set but SLUICE_GITHUB_APP_PRIVATE_KEY_FILE is not"
        )
    if key_file and not app_id:
        raise ConfigError(
            "SLUICE_GITHUB_APP_PRIVATE_KEY_FILE is set but SLUICE_GITHUB_APP_ID is not"
        )
    if app_id and not app_id.isdigit():
        raise ConfigError("SLUICE_GITHUB_APP_ID: must be a number")
    if key_file and not Path(key_file).is_file():
        raise ConfigError(f"SLUICE_GITHUB_APP_PRIVATE_KEY_FILE: {key_file}: no such file")
    if installation is not None and not installation.isdigit():
        raise ConfigError("SLUICE_GITHUB_APP_INSTALLATION_ID: must be a number")
    if not secret:
        disabled["github"] = (
            "SLUICE_GITHUB_WEBHOOK_SECRET is not set: unsigned webhooks are never accepted"
        )
        return None
    if not token and not app_id:
        disabled["github"] = (
            "no GitHub credentials: set SLUICE_GITHUB_TOKEN or SLUICE_GITHUB_APP_ID and "
            "SLUICE_GITHUB_APP_PRIVATE_KEY_FILE"
        )
        return None
    return GitHubSettings(
        api_url=env.get("SLUICE_GITHUB_API_URL", DEFAULT_GITHUB_API_URL).rstrip("/"),
        webhook_secret=secret,
        token=None if app_id else token,
        app_id=app_id,
        app_private_key_file=Path(key_file) if key_file else None,
        app_installation_id=int(installation) if installation else None,
    )


def _gitlab_from_env(env: Mapping[str, str], disabled: dict[str, str]) -> GitLabSettings | None:
    secret = env.get("SLUICE_GITLAB_WEBHOOK_SECRET")
    token = env.get("SLUICE_GITLAB_TOKEN")
    url = env.get("SLUICE_GITLAB_URL")
    if not any((secret, token, url)):
        disabled["gitlab"] = "GitLab is not configured (SLUICE_GITLAB_* variables are not set)"
        return None
    if url and not url.startswith(("https://", "http://")):
        raise ConfigError("SLUICE_GITLAB_URL: must start with https:// or http://")
    if not secret:
        disabled["gitlab"] = (
            "SLUICE_GITLAB_WEBHOOK_SECRET is not set: unauthenticated webhooks are never accepted"
        )
        return None
    if not token:
        disabled["gitlab"] = "no GitLab credentials: set SLUICE_GITLAB_TOKEN"
        return None
    return GitLabSettings(
        url=(url or DEFAULT_GITLAB_URL).rstrip("/"), webhook_secret=secret, token=token
    )


def _mentions(env: Mapping[str, str], forge: str) -> bool:
    prefix = f"SLUICE_{forge.upper()}_"
    return any(key.startswith(prefix) for key in env)


def _synchronous(value: str | None) -> Literal["FULL", "NORMAL"]:
    if value is None:
        return "NORMAL"
    if value.upper() not in ("FULL", "NORMAL"):
        raise ConfigError(f"SLUICE_DB_SYNCHRONOUS: must be normal or full, not {value!r}")
    return "FULL" if value.upper() == "FULL" else "NORMAL"


def _trusted_keys(value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if not path.is_dir():
        raise ConfigError(f"SLUICE_TRUSTED_KEYS: {value}: not a directory")
    return path


def _puller_url(env: Mapping[str, str]) -> str | None:
    url = env.get("SLUICE_PULLER_URL")
    if url is None:
        return None
    if not url.startswith(("https://", "http://")):
        raise ConfigError("SLUICE_PULLER_URL: must start with https:// or http://")
    if "@" in url.split("://", 1)[1].split("/", 1)[0]:
        raise ConfigError("SLUICE_PULLER_URL: must not carry credentials (use SLUICE_PULLER_TOKEN)")
    if not env.get("SLUICE_PULLER_TOKEN"):
        raise ConfigError(
            "SLUICE_PULLER_URL is set but SLUICE_PULLER_TOKEN is not: the puller accepts "
            "only authenticated calls"
        )
    return url.rstrip("/")


def _signing(environ: Mapping[str, str]) -> SigningConfig | None:
    try:
        return SigningConfig.from_env(environ)
    except LedgerError as exc:
        raise ConfigError(f"bot signing key: {exc}") from None


def _required_approvals(value: str | None) -> int:
    if value is None:
        return DEFAULT_REQUIRED_APPROVALS
    if not value.isdigit() or int(value) > MAX_REQUIRED_APPROVALS:
        raise ConfigError(
            f"SLUICE_REQUIRED_APPROVALS: must be a whole number from 0 to {MAX_REQUIRED_APPROVALS}"
        )
    return int(value)


def _check_cache_sizes(env: Mapping[str, str]) -> None:
    """Refuse a bad cache bound at startup; the caches read these variables themselves."""
    for name, default in (
        (EXPORT_ENV, DEFAULT_EXPORT_MAX_BYTES),
        (RENDER_ENV, DEFAULT_RENDER_MAX_BYTES),
    ):
        try:
            max_bytes(name, default, env)
        except CacheSizeError as exc:
            raise ConfigError(str(exc)) from None


def _workers(value: str | None) -> int:
    if value is None:
        return DEFAULT_WORKERS
    if not value.isdigit() or not 1 <= int(value) <= MAX_WORKERS:
        raise ConfigError(f"SLUICE_WORKERS: must be a whole number from 1 to {MAX_WORKERS}")
    return int(value)

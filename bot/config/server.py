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

Deploys (merge-to-deploy) read ``SLUICE_PULLER_URL`` / ``SLUICE_PULLER_TOKEN``, the
bot's signing key (``SLUICE_SIGNING_METHOD`` / ``SLUICE_SIGNING_KEY`` /
``SLUICE_GNUPGHOME``) and ``SLUICE_REQUIRED_APPROVALS``. Direct pushes are never
deployed: only merged pull requests, whose approvals can be checked.

The first matching entry wins; a repo that matches none gets the defaults.
Secrets live only in fields excluded from ``repr`` and never appear in errors.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from bot.cachesize import (
    DEFAULT_EXPORT_MAX_BYTES,
    DEFAULT_RENDER_MAX_BYTES,
    EXPORT_ENV,
    RENDER_ENV,
    CacheSizeError,
    max_bytes,
)
from bot.commands.spec import COMMANDS
from bot.config.repo import POLICY_ENGINES, ConfigError, load_yaml_text
from bot.config.signing import DEFAULT_LEDGER_BRANCH, SigningConfig
from bot.config.storage import StorageSettings
from bot.errors import LedgerError
from bot.forge.base import Permission

if TYPE_CHECKING:
    from bot.commands.authz import CommandRules

ForgeName = Literal["github", "gitlab"]
FORGES: tuple[ForgeName, ...] = ("github", "gitlab")

DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_GITLAB_URL = "https://gitlab.com"
DEFAULT_WORKERS = 4
MAX_WORKERS = 64
DEFAULT_REQUIRED_APPROVALS = 1
MAX_REQUIRED_APPROVALS = 20
DEFAULT_TRACKED_BRANCH = "main"
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")

#: Minimum repository permission per command when the config file says nothing.
DEFAULT_COMMAND_PERMISSIONS: Mapping[str, Permission] = MappingProxyType(
    {f"/{spec.name}": spec.default_level for spec in COMMANDS}
)
#: Commands nobody configured (a typo, a newer command) need at least this.
FALLBACK_PERMISSION = Permission.WRITE


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
class CommandRule:
    """Who may run a command: at least ``permission`` and, when lists are given,
    one of ``users`` or a member of one of ``teams`` (both conditions hold)."""

    permission: Permission
    users: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()

    @property
    def restricted(self) -> bool:
        return bool(self.users or self.teams)


@dataclass(frozen=True)
class PolicyOwners:
    users: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()


@dataclass(frozen=True)
class RepoSettings:
    match: str = "*"
    commands: Mapping[str, CommandRule] = field(default_factory=dict)
    policy_owners: PolicyOwners | None = None
    draft_previews: bool = True
    policy_engine: str = "regorus"
    opa_url: str | None = None
    #: None: the server-wide SLUICE_REQUIRED_APPROVALS.
    required_approvals: int | None = None
    tracked_branch: str = DEFAULT_TRACKED_BRANCH
    ledger_branch: str = DEFAULT_LEDGER_BRANCH
    #: Moved to each approved merge (for Argo CD / Flux to track); None: off.
    deploy_branch: str | None = None

    def matches(self, forge: str, full_name: str) -> bool:
        pattern = self.match.lower()
        forge_name, sep, rest = pattern.partition(":")
        if sep and forge_name in FORGES:
            if forge_name != forge:
                return False
            pattern = rest
        return fnmatch.fnmatchcase(full_name.lower(), pattern)

    def rule_for(self, command: str) -> CommandRule:
        """The rule for ``command`` ("/sync" or "sync"): configured, else the default.

        ``/approve-policy`` is further limited to ``policy_owners`` when those are set.
        """
        command = "/" + command.lstrip("/")
        rule = self.commands.get(command)
        if rule is None:
            rule = CommandRule(DEFAULT_COMMAND_PERMISSIONS.get(command, FALLBACK_PERMISSION))
        return rule

    def command_rules(self) -> CommandRules:
        """These settings as the authorization rules ``bot.commands.authorize`` takes."""
        from bot.commands.authz import CommandRule as AuthzRule
        from bot.commands.authz import CommandRules

        owners = self.policy_owners or PolicyOwners()
        return CommandRules(
            commands={
                name.lstrip("/"): AuthzRule(
                    rule.permission,
                    users=frozenset(rule.users) if rule.users else None,
                    teams=frozenset(rule.teams) if rule.teams else None,
                )
                for name, rule in self.commands.items()
            },
            policy_owner_users=frozenset(owners.users),
            policy_owner_teams=frozenset(owners.teams),
        )


DEFAULT_REPO_SETTINGS = RepoSettings()


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


# -- the config file -------------------------------------------------------------------

_REPO_FIELDS = {
    "match", "commands", "policy_owners", "draft_previews", "policy_engine", "opa_url",
    "required_approvals", "tracked_branch", "ledger_branch", "deploy_branch",
}  # fmt: skip
_TOP_FIELDS = {"repos", "policy_engine", "opa_url"}
_RULE_FIELDS = {"permission", "users", "teams"}


@dataclass(frozen=True)
class ServerFile:
    """The server config file: server-wide policy engine defaults and per-repo entries."""

    policy_engine: str = "regorus"
    opa_url: str | None = None
    repos: tuple[RepoSettings, ...] = ()


def load_server_file(path: Path) -> ServerFile:
    """Parse the server config file; raise ``ConfigError`` on the first problem."""
    parsed, errors = _parse_file(path)
    if errors:
        raise ConfigError(errors[0])
    return parsed


def load_repo_settings(path: Path) -> tuple[RepoSettings, ...]:
    return load_server_file(path).repos


def load_server_file_defaults(path: Path) -> tuple[str, str | None]:
    """(policy engine, OPA URL) the file sets server-wide, for ``sluice preview --config``."""
    parsed = load_server_file(path)
    return parsed.policy_engine, parsed.opa_url


def check_config_file(path: Path) -> list[str]:
    """Every problem in the server config file (empty when it is valid)."""
    return _parse_file(path)[1]


def _parse_file(path: Path) -> tuple[ServerFile, list[str]]:
    source = str(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        return ServerFile(), [f"{source}: cannot read: {exc.strerror}"]
    try:
        data = load_yaml_text(text, source)
    except ConfigError as exc:
        return ServerFile(), [str(exc)]
    if data is None:
        return ServerFile(), []
    if not isinstance(data, dict):
        return ServerFile(), [f"{source}: top level must be a mapping"]
    errors = [
        f"{source}: unknown field {str(key)!r} (allowed: {', '.join(sorted(_TOP_FIELDS))})"
        for key in data
        if key not in _TOP_FIELDS
    ]
    try:
        engine, opa_url = _parse_engine(data, "regorus", None, source)
    except ConfigError as exc:
        return ServerFile(), [*errors, str(exc)]
    raw_repos = data.get("repos") or []
    if not isinstance(raw_repos, list):
        return ServerFile(), [*errors, f"{source}: repos: must be a list"]
    settings: list[RepoSettings] = []
    for index, raw in enumerate(raw_repos):
        try:
            settings.append(_parse_repo(raw, f"{source}: repos[{index}]", engine, opa_url))
        except ConfigError as exc:
            errors.append(str(exc))
    return ServerFile(engine, opa_url, tuple(settings)), errors


def _parse_engine(
    raw: dict[str, Any], engine: str, opa_url: str | None, where: str
) -> tuple[str, str | None]:
    engine = raw.get("policy_engine", engine)
    if engine not in POLICY_ENGINES:
        raise ConfigError(f"{where}: policy_engine: must be one of {', '.join(POLICY_ENGINES)}")
    opa_url = raw.get("opa_url", opa_url)
    if opa_url is not None and (
        not isinstance(opa_url, str) or not opa_url.startswith(("http://", "https://"))
    ):
        raise ConfigError(f"{where}: opa_url: must be an http:// or https:// URL")
    if engine == "opa" and not opa_url:
        raise ConfigError(f"{where}: opa_url: required when policy_engine is opa")
    return engine, opa_url


def _parse_repo(
    raw: Any, where: str, default_engine: str, default_opa_url: str | None
) -> RepoSettings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    match = raw.get("match")
    if not isinstance(match, str) or not match.strip():
        raise ConfigError(f"{where}: match: must be a non-empty glob such as 'org/*'")
    where = f"{where} ({match})"
    unknown = sorted(str(k) for k in raw if k not in _REPO_FIELDS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(_REPO_FIELDS))})"
        )
    engine, opa_url = _parse_engine(raw, default_engine, default_opa_url, where)
    draft = raw.get("draft_previews", True)
    if not isinstance(draft, bool):
        raise ConfigError(f"{where}: draft_previews: must be true or false")
    return RepoSettings(
        match=match.strip(),
        commands=_parse_commands(raw.get("commands"), f"{where}: commands"),
        policy_owners=_parse_owners(raw.get("policy_owners"), f"{where}: policy_owners"),
        draft_previews=draft,
        policy_engine=engine,
        opa_url=opa_url,
        required_approvals=_parse_approvals(raw.get("required_approvals"), where),
        tracked_branch=_parse_branch(raw, "tracked_branch", DEFAULT_TRACKED_BRANCH, where),
        ledger_branch=_parse_branch(raw, "ledger_branch", DEFAULT_LEDGER_BRANCH, where),
        deploy_branch=_parse_deploy_branch(raw, where),
    )


def _parse_deploy_branch(raw: dict[str, Any], where: str) -> str | None:
    if raw.get("deploy_branch") is None:
        return None
    branch = _parse_branch(raw, "deploy_branch", "sluice/approved", where)
    defaults = {"tracked_branch": DEFAULT_TRACKED_BRANCH, "ledger_branch": DEFAULT_LEDGER_BRANCH}
    for other, default in defaults.items():
        if branch == raw.get(other, default):
            raise ConfigError(f"{where}: deploy_branch: must differ from {other}")
    return branch


def _parse_approvals(raw: Any, where: str) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= MAX_REQUIRED_APPROVALS:
        raise ConfigError(
            f"{where}: required_approvals: must be a whole number from 0 to "
            f"{MAX_REQUIRED_APPROVALS}"
        )
    return raw


def _parse_branch(raw: dict[str, Any], key: str, default: str, where: str) -> str:
    value = raw.get(key, default)
    if (
        not isinstance(value, str)
        or not _BRANCH.match(value)
        or ".." in value
        or value.endswith((".lock", "/"))
    ):
        raise ConfigError(f"{where}: {key}: must be a branch name such as {default!r}")
    return value


def _parse_commands(raw: Any, where: str) -> dict[str, CommandRule]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of command to rule")
    rules: dict[str, CommandRule] = {}
    for command, rule in raw.items():
        name = "/" + str(command).lstrip("/")
        if name not in DEFAULT_COMMAND_PERMISSIONS:
            raise ConfigError(
                f"{where}: unknown command {str(command)!r} "
                f"(known: {', '.join(DEFAULT_COMMAND_PERMISSIONS)})"
            )
        rules[name] = _parse_rule(rule, f"{where}: {name}")
    return rules


def _parse_rule(raw: Any, where: str) -> CommandRule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with permission, users, teams")
    unknown = sorted(str(k) for k in raw if k not in _RULE_FIELDS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r} (allowed: permission, users, teams)"
        )
    level = raw.get("permission")
    if level is None:
        raise ConfigError(f"{where}: permission: required (read, triage, write, maintain, admin)")
    if not isinstance(level, str):
        raise ConfigError(f"{where}: permission: must be a string such as 'write'")
    try:
        permission = Permission.parse(level)
    except ValueError as exc:
        raise ConfigError(f"{where}: permission: {exc}") from None
    if permission < Permission.READ:
        # Closed by default: an allowlist (users/teams) restricts further, never opens up.
        raise ConfigError(f"{where}: permission: must be read or higher")
    return CommandRule(
        permission=permission,
        users=_names(raw.get("users"), f"{where}: users"),
        teams=_names(raw.get("teams"), f"{where}: teams"),
    )


def _parse_owners(raw: Any, where: str) -> PolicyOwners | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with users and/or teams")
    unknown = sorted(str(k) for k in raw if k not in {"users", "teams"})
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} (allowed: teams, users)")
    owners = PolicyOwners(
        _names(raw.get("users"), f"{where}: users"), _names(raw.get("teams"), f"{where}: teams")
    )
    if not owners.users and not owners.teams:
        raise ConfigError(f"{where}: must name at least one user or team")
    return owners


def _names(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(v, str) and v.strip() for v in raw):
        raise ConfigError(f"{where}: must be a list of names")
    return tuple(v.strip() for v in raw)

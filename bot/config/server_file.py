"""The bot server's optional YAML file: per-repo settings and server-wide defaults, validated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config.repo import POLICY_ENGINES, ConfigError, load_yaml_text
from bot.config.repo_settings import (
    DEFAULT_COMMAND_PERMISSIONS,
    DEFAULT_TRACKED_BRANCH,
    CommandRule,
    PolicyOwners,
    RepoSettings,
)
from bot.config.signing import DEFAULT_LEDGER_BRANCH
from bot.forge.base import Permission

MAX_REQUIRED_APPROVALS = 20
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")

_REPO_FIELDS = {
    "match", "commands", "policy_owners", "draft_previews", "policy_engine", "opa_url",
    "required_approvals", "tracked_branch", "ledger_branch", "deploy_branch", "repo_urls",
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
        repo_urls=_parse_repo_urls(raw.get("repo_urls"), where),
    )


def _parse_repo_urls(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(v, str) and v.strip() for v in raw):
        raise ConfigError(f"{where}: repo_urls: must be a list of URL patterns")
    return tuple(v.strip() for v in raw)


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

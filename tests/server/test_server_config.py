from __future__ import annotations

from pathlib import Path

import pytest

from bot.commands import authorize
from bot.config import ConfigError
from bot.config.server import ServerConfig, check_config_file, load_server_file_defaults
from bot.forge.base import Permission

GH_TOKEN = "ghp_s3cr3tTOKENvalue000000000000000000"
GH_SECRET = "gh-webhook-s3cr3t-value"
GL_TOKEN = "glpat-s3cr3tGitLabToken"
GL_SECRET = "gl-webhook-s3cr3t-value"
SECRETS = (GH_TOKEN, GH_SECRET, GL_TOKEN, GL_SECRET)


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"SLUICE_DATA_DIR": str(tmp_path / "data"), "HOME": "/root", **extra}


def full_env(tmp_path: Path) -> dict[str, str]:
    return env(
        tmp_path,
        SLUICE_GITHUB_TOKEN=GH_TOKEN,
        SLUICE_GITHUB_WEBHOOK_SECRET=GH_SECRET,
        SLUICE_GITLAB_URL="https://gitlab.example.com/",
        SLUICE_GITLAB_TOKEN=GL_TOKEN,
        SLUICE_GITLAB_WEBHOOK_SECRET=GL_SECRET,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sluice-server.yaml"
    path.write_text(text)
    return path


def test_config_from_env_alone(tmp_path):
    config = ServerConfig.from_env(full_env(tmp_path))
    assert config.data_dir == tmp_path / "data"
    assert config.db_path == tmp_path / "data" / "sluice.db"
    assert config.github is not None and config.github.token == GH_TOKEN
    assert config.github.api_url == "https://api.github.com"
    assert config.gitlab is not None and config.gitlab.url == "https://gitlab.example.com"
    assert config.forge_enabled("github") and config.forge_enabled("gitlab")
    assert config.workers == 4
    assert config.bot_login is None and config.public_url is None
    assert config.disabled == {}
    # Every repo gets the documented default permissions.
    settings = config.repo_settings("github", "any/repo")
    assert settings.rule_for("/help").permission == Permission.READ
    assert settings.rule_for("/diff").permission == Permission.READ
    assert settings.rule_for("/policy").permission == Permission.READ
    assert settings.rule_for("/approve-policy").permission == Permission.MAINTAIN
    assert settings.rule_for("/sync").permission == Permission.WRITE
    assert settings.rule_for("/rollback").permission == Permission.WRITE
    assert settings.rule_for("/not-a-command").permission == Permission.WRITE


def test_data_dir_is_required(tmp_path):
    with pytest.raises(ConfigError, match="SLUICE_DATA_DIR is not set"):
        ServerConfig.from_env({"SLUICE_GITHUB_TOKEN": GH_TOKEN})


def test_forge_without_webhook_secret_is_disabled_with_reason(tmp_path):
    config = ServerConfig.from_env(env(tmp_path, SLUICE_GITHUB_TOKEN=GH_TOKEN))
    assert not config.forge_enabled("github")
    assert "SLUICE_GITHUB_WEBHOOK_SECRET is not set" in config.disabled["github"]
    assert "github" in config.misconfigured
    assert "gitlab" not in config.misconfigured
    assert "not configured" in config.disabled["gitlab"]


def test_forge_without_credentials_is_disabled(tmp_path):
    config = ServerConfig.from_env(env(tmp_path, SLUICE_GITLAB_WEBHOOK_SECRET=GL_SECRET))
    assert not config.forge_enabled("gitlab")
    assert "SLUICE_GITLAB_TOKEN" in config.disabled["gitlab"]


def test_github_app_credentials(tmp_path):
    key = tmp_path / "app.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\n")
    config = ServerConfig.from_env(
        env(
            tmp_path,
            SLUICE_GITHUB_WEBHOOK_SECRET=GH_SECRET,
            SLUICE_GITHUB_APP_ID="12345",
            SLUICE_GITHUB_APP_PRIVATE_KEY_FILE=str(key),
            SLUICE_GITHUB_APP_INSTALLATION_ID="777",
            SLUICE_GITHUB_API_URL="https://ghe.example.com/api/v3/",
        )
    )
    assert config.github is not None and config.github.uses_app
    assert config.github.app_private_key_file == key
    assert config.github.app_installation_id == 777
    assert config.github.api_url == "https://ghe.example.com/api/v3"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"SLUICE_GITHUB_APP_ID": "1"}, "SLUICE_GITHUB_APP_PRIVATE_KEY_FILE is not"),
        (
            {"SLUICE_GITHUB_APP_ID": "x1", "SLUICE_GITHUB_APP_PRIVATE_KEY_FILE": "/etc/hostname"},
            "SLUICE_GITHUB_APP_ID: must be a number",
        ),
        (
            {"SLUICE_GITHUB_APP_ID": "1", "SLUICE_GITHUB_APP_PRIVATE_KEY_FILE": "/nonexistent.pem"},
            "no such file",
        ),
        ({"SLUICE_WORKERS": "zero"}, "SLUICE_WORKERS"),
        ({"SLUICE_WORKERS": "0"}, "SLUICE_WORKERS"),
        ({"SLUICE_EXPORT_CACHE_MAX_BYTES": "big"}, "SLUICE_EXPORT_CACHE_MAX_BYTES: 'big' is not"),
        ({"SLUICE_RENDER_CACHE_MAX_BYTES": "-1"}, "SLUICE_RENDER_CACHE_MAX_BYTES"),
        ({"SLUICE_TRUSTED_KEYS": "/nonexistent-keys"}, "SLUICE_TRUSTED_KEYS"),
        ({"SLUICE_GITLAB_URL": "gitlab.example.com"}, "SLUICE_GITLAB_URL"),
    ],
)
def test_bad_environment_is_a_clear_error_without_secrets(tmp_path, extra, message):
    values = full_env(tmp_path) | extra
    with pytest.raises(ConfigError, match=message) as info:
        ServerConfig.from_env(values)
    assert not any(secret in str(info.value) for secret in SECRETS)


def test_optional_settings(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    config = ServerConfig.from_env(
        full_env(tmp_path)
        | {
            "SLUICE_WORKERS": "8",
            "SLUICE_BOT_LOGIN": "sluice-bot",
            "SLUICE_PUBLIC_URL": "https://sluice.example.com/",
            "SLUICE_TRUSTED_KEYS": str(keys),
        }
    )
    assert config.workers == 8
    assert config.bot_login == "sluice-bot"
    assert config.public_url == "https://sluice.example.com"
    assert config.trusted_keys == keys


def test_secrets_absent_from_repr(tmp_path):
    config = ServerConfig.from_env(full_env(tmp_path))
    text = repr(config) + str(config) + repr(config.github) + repr(config.gitlab)
    assert "api.github.com" in text  # the repr is still informative
    for secret in SECRETS:
        assert secret not in text


def test_config_file_first_match_wins(tmp_path):
    path = write(
        tmp_path,
        """
repos:
  - match: "gitlab:platform/*"
    policy_engine: opa
    opa_url: http://opa.example:8181
  - match: "org/prod-*"
    commands:
      /sync: {permission: maintainer, users: [alice], teams: [org/deployers]}
      help: {permission: read, users: [bob]}
    policy_owners: {users: [carol], teams: [org/security]}
    draft_previews: false
  - match: "org/*"
    policy_engine: regopy
""",
    )
    config = ServerConfig.from_env(full_env(tmp_path), path)
    prod = config.repo_settings("github", "Org/prod-web")
    assert prod.draft_previews is False
    sync = prod.rule_for("/sync")
    assert sync.permission == Permission.MAINTAIN
    assert sync.users == ("alice",) and sync.teams == ("org/deployers",)
    assert prod.rule_for("help").users == ("bob",)  # the slash is optional
    assert prod.rule_for("/rollback").permission == Permission.WRITE
    assert prod.rule_for("/approve-policy").permission == Permission.MAINTAIN
    assert prod.policy_owners.users == ("carol",)
    assert prod.policy_owners.teams == ("org/security",)
    # A later entry matches other repos of the org; the first entry is GitLab-only.
    assert config.repo_settings("github", "org/dev").policy_engine == "regopy"
    assert config.repo_settings("gitlab", "platform/sub/app").policy_engine == "opa"
    assert config.repo_settings("github", "platform/app").policy_engine == "regorus"
    assert config.repo_settings("github", "other/x").policy_owners is None
    assert check_config_file(path) == []


def test_repo_settings_drive_command_authorization(tmp_path):
    path = write(
        tmp_path,
        """
repos:
  - match: "org/*"
    commands:
      /sync: {permission: maintain, users: [alice]}
    policy_owners: {teams: [org/security]}
""",
    )
    config = ServerConfig.from_env(full_env(tmp_path), path)
    rules = config.repo_settings("github", "org/web").command_rules()
    levels = {"alice": Permission.MAINTAIN, "bob": Permission.ADMIN, "carol": Permission.MAINTAIN}

    def may(command: str, user: str, teams: tuple[str, ...] = ()) -> bool:
        return authorize(
            command,
            user,
            rules=rules,
            permission_of=levels.__getitem__,
            is_member=lambda team, _user: team in teams,
            pr_is_fork=False,
            is_bot_self=False,
        ).allowed

    assert may("/sync", "alice")
    assert not may("/sync", "bob")  # admin, but not on the allowlist
    assert may("/rollback", "bob")  # unconfigured command keeps its default
    assert not may("/approve-policy", "carol")  # maintainer, but not a policy owner
    assert may("/approve-policy", "carol", teams=("org/security",))
    default = config.repo_settings("github", "elsewhere/x").command_rules()
    assert not default.has_policy_owners
    assert default.rule_for("sync").users is None


def test_server_wide_policy_engine_defaults(tmp_path):
    path = write(
        tmp_path,
        """
policy_engine: opa
opa_url: http://opa.internal:8181
repos:
  - match: "org/fast"
    policy_engine: regorus
  - match: "org/*"
""",
    )
    assert load_server_file_defaults(path) == ("opa", "http://opa.internal:8181")
    config = ServerConfig.from_env(full_env(tmp_path), path)
    assert config.repo_settings("github", "org/fast").policy_engine == "regorus"
    inherited = config.repo_settings("github", "org/slow")
    assert (inherited.policy_engine, inherited.opa_url) == ("opa", "http://opa.internal:8181")
    bad = write(tmp_path, "policy_engine: opa\n")
    with pytest.raises(ConfigError, match="opa_url: required when policy_engine is opa"):
        load_server_file_defaults(bad)


def test_config_file_errors_name_file_and_field(tmp_path):
    path = write(
        tmp_path,
        """
repos:
  - match: "org/a"
    commands:
      /sync: {permission: wrte}
  - match: "org/b"
    commands:
      /snyc: {permission: write}
  - match: "org/c"
    policy_engine: opa
  - match: "org/d"
    draft_previews: "yes"
  - match: "org/e"
    colour: blue
  - commands: {}
  - match: "org/f"
    policy_owners: {}
  - match: "org/g"
    commands:
      /help: {permission: none, users: [x]}
""",
    )
    errors = check_config_file(path)
    assert len(errors) == 8
    assert all(e.startswith(f"{path}: repos[") for e in errors)
    assert (
        "repos[0] (org/a): commands: /sync: permission: unknown permission level 'wrte'"
        in (errors[0])
    )
    assert "repos[1] (org/b): commands: unknown command '/snyc'" in errors[1]
    assert "repos[2] (org/c): opa_url: required when policy_engine is opa" in errors[2]
    assert "repos[3] (org/d): draft_previews: must be true or false" in errors[3]
    assert "repos[4] (org/e): unknown field 'colour'" in errors[4]
    assert "repos[5]: match:" in errors[5]
    assert "repos[6] (org/f): policy_owners: must name at least one user or team" in errors[6]
    assert "repos[7] (org/g): commands: /help: permission: must be read or higher" in errors[7]
    with pytest.raises(ConfigError, match="unknown permission level 'wrte'"):
        ServerConfig.from_env(full_env(tmp_path), path)


def test_config_file_yaml_and_shape_errors(tmp_path):
    assert check_config_file(tmp_path / "missing.yaml")[0].endswith(
        "cannot read: No such file or directory"
    )
    bad_yaml = write(tmp_path, "repos:\n  - match: [unclosed\n")
    (error,) = check_config_file(bad_yaml)
    assert error.startswith(str(bad_yaml)) and "line" in error
    not_list = write(tmp_path, "repos: {match: x}\n")
    assert check_config_file(not_list) == [f"{not_list}: repos: must be a list"]
    unknown = write(tmp_path, "repo: []\n")
    assert "unknown field 'repo'" in check_config_file(unknown)[0]

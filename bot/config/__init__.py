"""Configuration: the repo's ``.sluice.yaml`` and the server's own settings."""

from bot.config.repo import (
    REPO_CONFIG_FILE,
    ConfigError,
    PolicySettings,
    RepoConfig,
    SignatureSettings,
    load_yaml_text,
    parse_repo_config,
    safe_repo_path,
)

__all__ = [
    "REPO_CONFIG_FILE",
    "ConfigError",
    "PolicySettings",
    "RepoConfig",
    "SignatureSettings",
    "load_yaml_text",
    "parse_repo_config",
    "safe_repo_path",
]

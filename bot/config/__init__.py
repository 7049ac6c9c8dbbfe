"""Configuration: the repo's ``.sluice.yaml`` and the server's own settings."""

from bot.config.repo import (
    DISCOVER_EVERYTHING,
    REPO_CONFIG_FILE,
    ConfigError,
    DiscoverSettings,
    PolicySettings,
    RepoConfig,
    SignatureSettings,
    load_yaml_text,
    parse_repo_config,
    safe_repo_path,
)

__all__ = [
    "DISCOVER_EVERYTHING",
    "REPO_CONFIG_FILE",
    "ConfigError",
    "DiscoverSettings",
    "PolicySettings",
    "RepoConfig",
    "SignatureSettings",
    "load_yaml_text",
    "parse_repo_config",
    "safe_repo_path",
]

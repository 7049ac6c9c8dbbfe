"""Per-repository settings of the bot server: which repos match, who may run which command,
previews, policy engine, approvals and the branches deploys use."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from bot.commands.spec import COMMANDS
from bot.config.signing import DEFAULT_LEDGER_BRANCH
from bot.forge.base import Permission

if TYPE_CHECKING:
    from bot.commands.authz import CommandRules

ForgeName = Literal["github", "gitlab"]
FORGES: tuple[ForgeName, ...] = ("github", "gitlab")
DEFAULT_TRACKED_BRANCH = "main"

#: Minimum repository permission per command when the config file says nothing.
DEFAULT_COMMAND_PERMISSIONS: Mapping[str, Permission] = MappingProxyType(
    {f"/{spec.name}": spec.default_level for spec in COMMANDS}
)
#: Commands nobody configured (a typo, a newer command) need at least this.
FALLBACK_PERMISSION = Permission.WRITE


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
    #: URL patterns naming this repository in Argo CD / Flux manifests (discovery).
    repo_urls: tuple[str, ...] = ()

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

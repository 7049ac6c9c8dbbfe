"""Who may run which command.

Closed by default: every command needs at least read access, deploy commands
are never taken from fork PRs, and the bot's own comments are never commands.
A forge error while checking permissions refuses the command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bot.commands.parse import ParsedCommand
from bot.commands.spec import COMMAND_NAMES, COMMANDS, spec_for
from bot.forge.base import ForgeError, Permission


@dataclass(frozen=True)
class CommandRule:
    """Who may run one command.

    ``level`` is the minimum repository permission. ``users``/``teams`` is an
    allowlist: ``None`` for both means no allowlist; once either is set the
    actor must be one of ``users`` or in one of ``teams`` *and* meet ``level``
    (so ``users=frozenset()`` with no teams lets nobody run the command).
    Logins compare case-insensitively; any iterable of strings is accepted.
    """

    level: Permission
    users: frozenset[str] | None = None
    teams: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.level < Permission.READ:
            raise ValueError("a command's level must be read or higher")
        if self.users is not None:
            object.__setattr__(self, "users", frozenset(u.lower() for u in self.users))
        if self.teams is not None:
            object.__setattr__(self, "teams", frozenset(self.teams))

    @property
    def has_allowlist(self) -> bool:
        return self.users is not None or self.teams is not None


def default_rules() -> Mapping[str, CommandRule]:
    return MappingProxyType({spec.name: CommandRule(spec.default_level) for spec in COMMANDS})


@dataclass(frozen=True)
class CommandRules:
    """Per-repository command permissions; commands not in ``commands`` keep their default.

    When ``policy_owner_users`` or ``policy_owner_teams`` is non-empty,
    /approve-policy additionally requires the actor to be one of those users or
    in one of those teams.
    """

    commands: Mapping[str, CommandRule] = field(default_factory=default_rules)
    policy_owner_users: frozenset[str] = frozenset()
    policy_owner_teams: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.commands) - set(COMMAND_NAMES))
        if unknown:
            raise ValueError(
                f"unknown command(s) {', '.join(unknown)}; known: {', '.join(COMMAND_NAMES)}"
            )
        merged = dict(default_rules())
        merged.update(self.commands)
        object.__setattr__(self, "commands", MappingProxyType(merged))
        object.__setattr__(
            self, "policy_owner_users", frozenset(u.lower() for u in self.policy_owner_users)
        )
        object.__setattr__(self, "policy_owner_teams", frozenset(self.policy_owner_teams))

    def rule_for(self, name: str) -> CommandRule:
        return self.commands[name]

    @property
    def has_policy_owners(self) -> bool:
        return bool(self.policy_owner_users or self.policy_owner_teams)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def authorize(
    command: ParsedCommand | str,
    actor: str,
    *,
    rules: CommandRules,
    permission_of: Callable[[str], Permission],
    is_member: Callable[[str, str], bool],
    pr_is_fork: bool,
    is_bot_self: bool,
) -> Decision:
    """Whether ``actor`` may run ``command`` on this PR, with a reason a user can read.

    ``permission_of(user)`` and ``is_member(team, user)`` ask the forge; a
    ``ForgeError`` from either refuses the command.
    """
    name = command.name if isinstance(command, ParsedCommand) else command.lstrip("/")
    slash = f"/{name}"
    who = f"@{actor}"
    if is_bot_self:
        return Decision(False, "the bot's own comments are never commands")
    spec = spec_for(name)
    if spec is None:
        return Decision(False, f"{slash} is not a Sluice command")
    if spec.deploys and pr_is_fork:
        return Decision(
            False,
            f"{slash} is not accepted on pull requests from forks: deploy commands "
            "run only for branches of this repository",
        )
    rule = rules.rule_for(name)
    try:
        has = permission_of(actor)
        if has < rule.level:
            return Decision(
                False, f"{who} needs {_level(rule.level)} access to run {slash} (has {_held(has)})"
            )
        if rule.has_allowlist and not _listed(
            actor, rule.users or frozenset(), rule.teams or frozenset(), is_member
        ):
            return Decision(
                False,
                f"{who} may not run {slash}: it is limited to {_people(rule.users, rule.teams)}",
            )
        if (
            name == "approve-policy"
            and rules.has_policy_owners
            and not _listed(actor, rules.policy_owner_users, rules.policy_owner_teams, is_member)
        ):
            return Decision(
                False,
                f"{who} is not a policy owner; only "
                f"{_people(rules.policy_owner_users, rules.policy_owner_teams)} "
                f"may override policy with {slash}",
            )
    except ForgeError as exc:
        return Decision(False, f"could not check {who}'s access to run {slash}: {exc}")
    return Decision(True, f"{who} has {_level(has)} access, enough to run {slash}")


def _listed(
    actor: str,
    users: frozenset[str],
    teams: frozenset[str],
    is_member: Callable[[str, str], bool],
) -> bool:
    if actor.lower() in users:
        return True
    return any(is_member(team, actor) for team in sorted(teams))


def _level(permission: Permission) -> str:
    return permission.name.lower()


def _held(permission: Permission) -> str:
    return "no access" if permission == Permission.NONE else permission.name.lower()


def _people(users: Iterable[str] | None, teams: Iterable[str] | None) -> str:
    # Backticks, not "@": a refusal must not notify everyone on the list.
    names = [f"`{u}`" for u in sorted(users or ())]
    names += [f"members of `{t}`" for t in sorted(teams or ())]
    if not names:
        return "nobody"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]

"""The chat-ops commands Sluice understands: names, arguments, options, default levels."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from bot.forge.base import Permission

# What the words after a command name are.
ArgKind = Literal["apps", "reason", "none"]


@dataclass(frozen=True)
class CommandSpec:
    name: str  # without the leading slash
    args: ArgKind
    summary: str
    default_level: Permission
    # (option name without "--", metavar) for options that take a value.
    options: tuple[tuple[str, str], ...] = ()
    deploys: bool = False  # changes what runs in a cluster: never from a fork

    @property
    def usage(self) -> str:
        parts = [f"/{self.name}"]
        if self.args == "apps":
            parts.append("[app…]")
        elif self.args == "reason":
            parts.append("[reason…]")
        parts.extend(f"[--{opt} {metavar}]" for opt, metavar in self.options)
        return " ".join(parts)


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "diff",
        "apps",
        "Re-run the preview; named apps are rendered even if the PR does not touch them.",
        Permission.READ,
    ),
    CommandSpec(
        "policy",
        "apps",
        "Re-run the policy check for the affected (or the named) apps.",
        Permission.READ,
    ),
    CommandSpec("help", "none", "Show this help.", Permission.READ),
    CommandSpec(
        "approve-policy",
        "reason",
        "Override the current policy denials for this head commit; "
        "a new push or a changed violation voids it.",
        Permission.MAINTAIN,
    ),
    CommandSpec(
        "sync",
        "apps",
        "Ask the puller to deploy the affected (or the named) apps now.",
        Permission.WRITE,
        deploys=True,
    ),
    CommandSpec(
        "rollback",
        "apps",
        "Roll the affected (or the named) apps back to the previous approved revision, or to REV.",
        Permission.WRITE,
        options=(("to", "REV"),),
        deploys=True,
    ),
)

COMMAND_NAMES: tuple[str, ...] = tuple(spec.name for spec in COMMANDS)

# Words people type for a command under another tool's name.
ALIASES: MappingProxyType[str, str] = MappingProxyType(
    {
        "deploy": "sync",
        "apply": "sync",
        "plan": "diff",
        "preview": "diff",
        "revert": "rollback",
        "undo": "rollback",
        "approve": "approve-policy",
        "override": "approve-policy",
    }
)


def spec_for(name: str) -> CommandSpec | None:
    return next((spec for spec in COMMANDS if spec.name == name), None)

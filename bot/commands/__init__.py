"""Chat-ops: find commands in PR comments, decide who may run them, explain them."""

from bot.commands.authz import CommandRule, CommandRules, Decision, authorize, default_rules
from bot.commands.help import help_text, suggestions, unknown_command_reply
from bot.commands.parse import (
    CommandError,
    Parsed,
    ParsedCommand,
    UnknownCommand,
    command_lines,
    parse_commands,
)
from bot.commands.spec import COMMAND_NAMES, COMMANDS, CommandSpec, spec_for

__all__ = [
    "COMMANDS",
    "COMMAND_NAMES",
    "CommandError",
    "CommandRule",
    "CommandRules",
    "CommandSpec",
    "Decision",
    "Parsed",
    "ParsedCommand",
    "UnknownCommand",
    "authorize",
    "command_lines",
    "default_rules",
    "help_text",
    "parse_commands",
    "spec_for",
    "suggestions",
    "unknown_command_reply",
]

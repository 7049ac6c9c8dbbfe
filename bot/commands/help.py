"""The /help reply and the reply to a command Sluice does not know."""

from __future__ import annotations

import difflib

from bot.commands.authz import CommandRules
from bot.commands.spec import ALIASES, COMMAND_NAMES, COMMANDS
from bot.forge.base import Permission
from bot.report.escape import code


def help_text(bot_login: str | None, rules: CommandRules | None = None) -> str:
    """Markdown listing every command, its arguments and who may run it."""
    rules = rules or CommandRules()
    rows = [
        "| Command | What it does | Who may run it |",
        "| --- | --- | --- |",
    ]
    for spec in COMMANDS:
        rows.append(f"| `{spec.usage}` | {spec.summary} | {_who(spec.name, rules)} |")
    lines = ["### Sluice commands", ""]
    intro = "Write a command at the start of a line in a PR comment"
    if bot_login:
        mention = bot_login.removesuffix("[bot]")
        intro += f", or address the bot: `@{mention} sync web-prod`"
    lines.append(
        intro + ". Commands inside quotes or code are ignored; one comment may hold several."
    )
    lines += ["", *rows, ""]
    lines.append(
        "App names are the `name`s in `.sluice.yaml`; without names a command acts on "
        "the apps this PR changes. `/sync` and `/rollback` are not accepted on pull "
        "requests from forks. `/sync` works before merge only on apps with "
        "`sync_before_merge: true`; `/rollback` only on merged pull requests."
    )
    if rules.has_policy_owners:
        owners = sorted(rules.policy_owner_users) + sorted(rules.policy_owner_teams)
        lines.append("")
        lines.append(f"Policy owners (`/approve-policy`): {', '.join(code(o) for o in owners)}.")
    return "\n".join(lines)


def suggestions(name: str) -> list[str]:
    """Known commands ``name`` was probably meant to be, best first."""
    word = name.lower().lstrip("/")
    found = difflib.get_close_matches(word, COMMAND_NAMES, n=3, cutoff=0.6)
    alias = ALIASES.get(word)
    if alias and alias not in found:
        found.insert(0, alias)
    return found


def unknown_command_reply(name: str) -> str:
    """Markdown reply to ``/name`` that Sluice does not know, with a did-you-mean."""
    shown = name.lstrip("/")[:64]
    lines = [f"Sluice does not know the command {code('/' + shown)}."]
    guesses = suggestions(name)
    if guesses:
        options = " or ".join(f"`/{g}`" for g in guesses)
        lines[0] += f" Did you mean {options}?"
    known = ", ".join(f"`/{n}`" for n in COMMAND_NAMES)
    lines += ["", f"Known commands: {known}. Write `/help` for details."]
    return "\n".join(lines)


def who_may_run(name: str, rules: CommandRules) -> str:
    """Who may run ``/name`` on a repository with ``rules``, in plain words (the
    report escapes them)."""
    rule = rules.rule_for(name)
    who = f"{rule.level.name.lower()} access"
    if rule.level < Permission.ADMIN:
        who += " or higher"
    if rule.has_allowlist:
        who += ", only " + (
            ", ".join(sorted(rule.users or ()) + sorted(rule.teams or ())) or "nobody"
        )
    if name == "approve-policy" and rules.has_policy_owners:
        owners = sorted(rules.policy_owner_users) + sorted(rules.policy_owner_teams)
        who += ", policy owners only: " + ", ".join(owners)
    return who


def _who(name: str, rules: CommandRules) -> str:
    rule = rules.rule_for(name)
    who = f"{rule.level.name.lower()} access"
    if rule.level < Permission.ADMIN:
        who += " or higher"
    if rule.has_allowlist:
        listed = sorted(rule.users or ()) + sorted(rule.teams or ())
        who += ": only " + (", ".join(code(x, in_table=True) for x in listed) or "nobody")
    if name == "approve-policy" and rules.has_policy_owners:
        who += ", policy owners only"
    return who

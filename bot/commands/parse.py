"""Find chat-ops commands in a PR comment.

A command is a line that starts with ``/name`` (at most three spaces of
indentation) or with ``@<bot-login> name``. Lines that Markdown renders as
something other than plain paragraph text never carry commands: block quotes
(including their lazy continuation lines), fenced and indented code blocks,
HTML comments, and lines that begin inside an inline code span. When in doubt
a line is not a command: a missed command is re-typed, a phantom one deploys.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from bot.commands.spec import CommandSpec, spec_for
from bot.models import ANY_APP_NAME

MAX_COMMANDS = 20
MAX_APPS = 50
MAX_REASON_CHARS = 500

# App names: .sluice.yaml's rule, or discovered Argo CD / Flux names (bot.models).
_APP_NAME = ANY_APP_NAME
# A git revision: a SHA, tag, branch or HEAD~n; never an option, never a range.
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/~^-]{0,199}$")
_WORD = r"[A-Za-z][A-Za-z0-9_-]{0,63}"
_SLASH_COMMAND = re.compile(rf"/({_WORD})(?:[ \t]+(.*))?$")
_MENTION = re.compile(r"@(\S+)(?:[ \t]+(.*))?$")
_MENTION_COMMAND = re.compile(rf"/?({_WORD})(?:[ \t]+(.*))?$")
# Only CR, LF and CRLF end a Markdown line (not str.splitlines()'s Unicode separators).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LIST_MARKERS = r"(?:(?:[-+*]|\d{1,9}[.)])[ \t]+)*"
_FENCE_OPEN = re.compile(rf"^( {{0,3}}{_LIST_MARKERS})(`{{3,}}|~{{3,}})(.*)$")
# A quote at any depth, also in a list item; indented ones err towards "quoted".
_QUOTE = re.compile(rf"^[ \t]*{_LIST_MARKERS}>")
_BACKTICKS = re.compile(r"`+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class ParsedCommand:
    """A well-formed command. ``args`` are app names (validated in form only)."""

    name: str  # without the slash, e.g. "sync"
    args: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)  # e.g. {"to": "v1.2.0"}
    raw: str = ""  # the line as written
    line: int = 0  # 1-based line number in the comment
    reason: str = ""  # free text of /approve-policy


@dataclass(frozen=True)
class UnknownCommand:
    name: str
    raw: str = ""
    line: int = 0


@dataclass(frozen=True)
class CommandError:
    """A known command written wrongly; ``message`` says what and how to fix it."""

    name: str
    message: str
    raw: str = ""
    line: int = 0


Parsed = ParsedCommand | UnknownCommand | CommandError


def parse_commands(body: str, bot_login: str | None) -> list[Parsed]:
    """Every command in ``body``, in order of appearance."""
    found: list[Parsed] = []
    for number, text in command_lines(body):
        parsed = _parse_line(text, number, bot_login)
        if parsed is not None:
            found.append(parsed)
    if len(found) > MAX_COMMANDS:
        # Nothing half-applied: a flood of commands runs none of them.
        return [
            CommandError(
                name="",
                message=f"this comment holds {len(found)} commands; at most {MAX_COMMANDS} "
                "are accepted in one comment, so none of them were run",
            )
        ]
    return found


def command_lines(body: str) -> list[tuple[int, str]]:
    """(1-based line number, line) for every line whose start Markdown renders as plain text."""
    lines = _LINE_BREAK.split(body)
    candidates: list[tuple[int, str]] = []
    paragraph: list[tuple[int, str]] = []
    fence: _Fence | None = None
    in_html_comment = False
    lazy_quote = False

    def close_paragraph() -> None:
        candidates.extend(_outside_code_spans(paragraph))
        paragraph.clear()

    for index, line in enumerate(lines):
        number = index + 1
        if fence is not None:
            if _closes_fence(line, fence):
                fence = None
                continue
            if not line.strip() or _indent(line) >= fence.container:
                continue
            fence = None  # the list item holding the fence ended, and the fence with it
        if in_html_comment:
            end = line.find("-->")
            in_html_comment = end < 0 or _opens_html_comment(line[end + 3 :])
            continue
        if not line.strip():
            close_paragraph()
            lazy_quote = False
            continue
        fence = _opens_fence(line)
        if fence is not None:
            close_paragraph()
            lazy_quote = False
            continue
        if _QUOTE.match(line):
            close_paragraph()
            lazy_quote = bool(line.lstrip(" >\t"))
            in_html_comment = _opens_html_comment(line)
            continue
        if lazy_quote:
            in_html_comment = _opens_html_comment(line)
            continue  # a lazy continuation line: rendered inside the quote above
        if _indent(line) >= 4 and not paragraph:
            continue  # an indented code block (it cannot interrupt a paragraph)
        in_html_comment = _opens_html_comment(line)
        if line.lstrip(" ").startswith("<!--"):
            close_paragraph()
            continue
        paragraph.append((number, line))
        if in_html_comment:
            close_paragraph()
    close_paragraph()
    return candidates


def _opens_html_comment(line: str) -> bool:
    """Whether ``line`` leaves an HTML comment open: browsers hide what follows it."""
    start = line.rfind("<!--")
    return start >= 0 and "-->" not in line[start + 4 :]


def _indent(line: str) -> int:
    stripped = line.lstrip(" \t")
    return len(line[: len(line) - len(stripped)].expandtabs(4))


@dataclass(frozen=True)
class _Fence:
    char: str
    length: int
    # The content column of the list item the fence opened in (0 at top level): a
    # non-blank line left of it ends the item, and the fence with it.
    container: int

    @property
    def max_closing_indent(self) -> int:
        return self.container + 3


def _opens_fence(line: str) -> _Fence | None:
    opened = _FENCE_OPEN.match(line)
    if opened is None:
        return None
    prefix, run, info = opened.groups()
    if run[0] == "`" and "`" in info:
        return None  # "```x```" is an inline code span, not a fence
    # After a list marker the fence sits in that item: its column is the item's.
    container = len(prefix.expandtabs(4)) if prefix.strip() else 0
    return _Fence(run[0], len(run), container)


def _closes_fence(line: str, fence: _Fence) -> bool:
    stripped = line.lstrip(" ")
    if len(line) - len(stripped) > fence.max_closing_indent:
        return False
    run = len(stripped) - len(stripped.lstrip(fence.char))
    return run >= fence.length and not stripped[run:].strip()


def _outside_code_spans(paragraph: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The paragraph's lines that do not start inside an inline code span."""
    if not paragraph:
        return []
    spans = iter(_code_spans("\n".join(line for _, line in paragraph)))
    span = next(spans, None)
    kept = []
    offset = 0
    for number, line in paragraph:
        while span is not None and span[1] <= offset:
            span = next(spans, None)
        if span is None or not span[0] < offset:
            kept.append((number, line))
        offset += len(line) + 1
    return kept


def _code_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each inline code span, in order, per CommonMark's backtick runs.

    A backslash escapes the first backtick of an opening run; inside a span,
    backslashes are literal, so closing runs are never escaped.
    """
    runs = [(m.start(), m.end() - m.start()) for m in _BACKTICKS.finditer(text)]
    by_length: dict[int, list[int]] = {}
    for index, (_, length) in enumerate(runs):
        by_length.setdefault(length, []).append(index)

    spans = []
    index = 0
    while index < len(runs):
        start, length = runs[index]
        escapes = start
        while escapes > 0 and text[escapes - 1] == "\\":
            escapes -= 1
        if (start - escapes) % 2:
            start, length = start + 1, length - 1
        same = by_length.get(length, [])
        k = bisect.bisect_right(same, index)
        if length == 0 or k == len(same):
            index += 1  # no closing run: the backticks are literal
            continue
        closer_start, closer_length = runs[same[k]]
        spans.append((start, closer_start + closer_length))
        index = same[k] + 1
    return spans


def _parse_line(text: str, number: int, bot_login: str | None) -> Parsed | None:
    if _indent(text) > 3:
        return None  # indented code, or a tab (which Markdown counts as four columns)
    line = text.strip()
    if line.startswith("/"):
        match = _SLASH_COMMAND.match(line)
    elif bot_login and line.startswith("@"):
        rest = _after_mention(line, bot_login)
        match = _MENTION_COMMAND.match(rest) if rest else None
    else:
        return None
    if match is None:
        return None
    word, rest_of_line = match.group(1), (match.group(2) or "").strip()
    name = word.lower()
    spec = spec_for(name)
    if spec is None:
        return UnknownCommand(name=word, raw=line, line=number)
    return _parse_arguments(spec, rest_of_line, line, number)


def _after_mention(line: str, bot_login: str) -> str | None:
    """The text after a leading ``@bot-login``, or None if the line does not address the bot."""
    match = _MENTION.match(line)
    if match is None:
        return None
    login = bot_login.lower()
    # A GitHub App posts as "name[bot]" but people address it as "@name".
    if match.group(1).lower() not in {login, login.removesuffix("[bot]")}:
        return None
    return (match.group(2) or "").strip() or None


def _parse_arguments(spec: CommandSpec, rest: str, raw: str, number: int) -> Parsed:
    def error(message: str) -> CommandError:
        return CommandError(name=spec.name, message=message, raw=raw, line=number)

    if spec.args == "reason":
        reason = _clean_reason(rest)
        if len(reason) > MAX_REASON_CHARS:
            return error(
                f"the reason for /{spec.name} is {len(reason)} characters long; "
                f"keep it under {MAX_REASON_CHARS}"
            )
        return ParsedCommand(name=spec.name, raw=raw, line=number, reason=reason)
    if spec.args == "none":
        return ParsedCommand(name=spec.name, raw=raw, line=number)  # "/help me" is still /help

    args: list[str] = []
    options: dict[str, str] = {}
    known = dict(spec.options)
    tokens = rest.split()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.startswith("-"):
            option, has_value, value = token.lstrip("-").partition("=")
            if not token.startswith("--") or option not in known:
                return error(f"/{spec.name} has no option {_show(token)}; usage: `{spec.usage}`")
            if option in options:
                return error(f"--{option} is given twice; usage: `{spec.usage}`")
            if not has_value:
                if i == len(tokens) or tokens[i].startswith("-"):
                    return error(f"--{option} needs a value; usage: `{spec.usage}`")
                value = tokens[i]
                i += 1
            if not _REVISION.match(value) or ".." in value or "@{" in value:
                return error(
                    f"{_show(value)} is not a revision --{option} accepts "
                    "(a commit SHA, tag or branch name)"
                )
            options[option] = value
            continue
        if not _APP_NAME.match(token):
            return error(
                f"{_show(token)} is not a valid app name "
                "(lowercase letters, digits, '.', '_' and '-')"
            )
        if token not in args:
            args.append(token)
    if len(args) > MAX_APPS:
        return error(f"/{spec.name} names {len(args)} apps; at most {MAX_APPS} at once")
    return ParsedCommand(name=spec.name, args=tuple(args), options=options, raw=raw, line=number)


def _clean_reason(text: str) -> str:
    reason = _CONTROL.sub("", text).strip()
    if len(reason) >= 2 and reason[0] == reason[-1] and reason[0] in "\"'":
        reason = reason[1:-1].strip()
    return reason


def _show(token: str) -> str:
    """User input quoted for a reply: inert in Markdown (no mentions, no markup)."""
    shown = token if len(token) <= 40 else token[:40] + "…"
    return "`" + shown.replace("`", "'") + "`"

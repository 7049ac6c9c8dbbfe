"""Escaping for untrusted text (object names, policy messages, errors) in Markdown.

Everything that comes from a repository is untrusted: it must not open HTML, break
out of a table cell or a code block, or mention people.
"""

from __future__ import annotations

import html
import re
import unicodedata

# CommonMark lets any ASCII punctuation be backslash-escaped; these can start Markdown
# syntax anywhere in a line or a table cell ("[" opens links, so "(" needs no escape).
_MARKDOWN_SPECIAL = set("\\`*_[]!|~<>")
# These start a block (list, heading, ordered list) only at the start of a line.
_LINE_START_SPECIAL = set("-+#=.)")
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_ZERO_WIDTH_SPACE = "\u200b"
_BACKTICK_RUN = re.compile(r"`+")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")
# A login the forge would accept; anything else is never written as a live mention.
_LOGIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9_])?(?:\[bot\])?$")
# Emoji sequences need the zero-width joiner; every other format character is shown.
_KEEP_FORMAT = {"\u200d"}


def visible(value: str, *, keep_tabs: bool = False) -> str:
    """``value`` with invisible format and control characters (bidi overrides such as
    U+202E, zero-width spaces, BOM) written out as ``‹U+202E›``, so a name reads as
    the bytes it holds."""
    out: list[str] = []
    for ch in value:
        if ch in "\n\r" or (keep_tabs and ch == "\t") or ch in _KEEP_FORMAT:
            out.append(ch)
        elif unicodedata.category(ch) in ("Cf", "Cc", "Co", "Cs"):
            out.append(f"‹U+{ord(ch):04X}›")
        else:
            out.append(ch)
    return "".join(out)


def one_line(value: str) -> str:
    return _LINE_BREAKS.sub(" ", visible(value))


def truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return value[: max(limit - 1, 0)] + "…"


def text(value: str) -> str:
    """Plain text for a Markdown paragraph or table cell, shown exactly as written."""
    out: list[str] = []
    line = one_line(value)
    for i, ch in enumerate(line):
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif (
            ch in _MARKDOWN_SPECIAL
            or (ch in _LINE_START_SPECIAL and (i == 0 or line[:i].isdigit()))
            or line.startswith("://", i)  # no autolinked URL
            or (ch == "." and line[max(i - 3, 0) : i].lower() == "www")
        ):
            out.append("\\" + ch)
        elif ch == "@":
            # "@name" would notify a user or team; the zero-width space keeps it inert.
            out.append("@" + _ZERO_WIDTH_SPACE)
        else:
            out.append(ch)
    return "".join(out)


def code(value: str, *, in_table: bool = False) -> str:
    """An inline code span holding ``value`` verbatim (code spans never render HTML
    or mentions). In a table, ``|`` must still be escaped: GFM splits cells first."""
    value = one_line(value)
    longest = max((len(m) for m in _BACKTICK_RUN.findall(value)), default=0)
    ticks = "`" * (longest + 1)
    if value.startswith("`") or value.endswith("`") or not value.strip():
        value = f" {value} "
    if in_table:
        value = value.replace("|", "\\|")
    return f"{ticks}{value}{ticks}"


def html_code(value: str) -> str:
    """``<code>`` for use inside raw HTML such as ``<summary>``."""
    return f"<code>{html_text(value)}</code>"


def html_text(value: str) -> str:
    """Text inside raw HTML (``<summary>``): HTML-escaped, not Markdown-escaped (a
    backslash would show), with mentions kept inert the same way as :func:`text`."""
    return html.escape(one_line(value), quote=True).replace("@", "@" + _ZERO_WIDTH_SPACE)


def mention(login: str) -> str:
    """A live ``@login`` for the person a reply is addressed to, if it is a plausible
    login; anything else is shown inert as code."""
    if _LOGIN.match(login):
        return f"@{login}"
    return code(login)


def reply(login: str, body: str) -> str:
    """A chat-ops reply: the mention on its own line, then ``body`` (trusted Markdown
    whose untrusted parts are already escaped)."""
    return f"{mention(login)}\n\n{body.strip()}\n"


def fence_for(body: str, char: str = "`") -> str:
    """A code fence longer than any run of ``char`` inside ``body``."""
    longest = max((len(m) for m in re.findall(re.escape(char) + "+", body)), default=0)
    return char * max(3, longest + 1)


def code_block(body: str, info: str = "") -> str:
    body = visible(body, keep_tabs=True)
    fence = fence_for(body)
    if body and not body.endswith("\n"):
        body += "\n"
    return f"{fence}{info}\n{body}{fence}\n"

"""Renderer messages made safe to show: no object dumps, no Secret values, bounded size.

Every step is one pass over the text, so a hostile 60,000-character name in a
kubectl message costs milliseconds, not minutes.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.diff.leaks import replace_all
from bot.diff.secrets import placeholder

__all__ = ["clip", "collapse_dumps", "replace_all", "secret_redactor"]

MAX_ERROR_CHARS = 400
_ELLIPSIS = "…"

Redactor = Callable[[str], str]


def collapse_dumps(text: str) -> str:
    """Replace every balanced ``{…}`` and ``map[…]`` (object dumps) with ``…``, in one pass.

    Plain ``[…]`` lists stay, except inside a collapsed group. Unbalanced brackets
    are kept as they are.
    """
    out: list[str] = []
    # (closing bracket, where the group starts in ``out``, whether it collapses)
    stack: list[tuple[str, int, bool]] = []
    for index, char in enumerate(text):
        if char == "{":
            stack.append(("}", len(out), True))
        elif char == "[":
            is_map = index >= 3 and text[index - 3 : index] == "map"
            stack.append(("]", len(out) - 3 if is_map else len(out), is_map))
        elif char in "}]" and stack and stack[-1][0] == char:
            _, start, collapses = stack.pop()
            if collapses:
                del out[start:]  # each character is deleted at most once: linear overall
                out.append(_ELLIPSIS)
                continue
        out.append(char)
    return "".join(out)


def secret_redactor(key: bytes) -> Redactor:
    """Masks a Secret value as the Secret diff does (its fingerprint), or ``***`` without a key."""
    if not key:
        return lambda _value: "***"
    return lambda value: placeholder(value.encode("utf-8"), key)


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS

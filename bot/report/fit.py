"""Fitting rows into a character budget: keep rows in order, then say how many were
left out and where they are."""

from __future__ import annotations

from collections.abc import Callable


def fit_rows(heading: str, rows: list[str], more: Callable[[int], str], limit: int) -> str:
    """``heading`` + as many ``rows`` as fit in ``limit`` + ``more(n)`` for the rest.

    "" without rows, or when not even :func:`minimum` fits (callers that must show
    the section reserve that first)."""
    if not rows:
        return ""
    full = heading + "".join(rows) + "\n"
    if len(full) <= limit:
        return full
    if len(heading) + len(more(len(rows))) + 1 > limit:
        return ""
    room = limit - len(heading) - len(more(len(rows))) - 1
    kept = 0
    for row in rows:
        if len(row) > room:
            break
        kept += 1
        room -= len(row)
    return heading + "".join(rows[:kept]) + "\n" + more(len(rows) - kept)


def minimum(heading: str, rows: list[str], more: Callable[[int], str]) -> int:
    """The least :func:`fit_rows` needs: the heading and the "more" line."""
    if not rows:
        return 0
    return min(len(heading) + len(more(len(rows))) + 1, len(heading) + sum(map(len, rows)) + 1)


def cut_lines(body: str, limit: int) -> tuple[str, int, int]:
    """``body`` cut at a line boundary to at most ``limit`` characters: (kept text,
    lines cut, lines in all)."""
    lines = body.splitlines(keepends=True)
    if len(body) <= limit:
        return body, 0, len(lines)
    kept: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) > limit:
            break
        kept.append(line)
        used += len(line)
    return "".join(kept), len(lines) - len(kept), len(lines)

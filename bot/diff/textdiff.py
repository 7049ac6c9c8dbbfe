"""A unified diff whose cost is bounded: huge changes are counted, not diffed.

``difflib`` is quadratic in the worst case (a 40,000-line ConfigMap took 207 s). The
lines both sides share at the start and the end are set aside first (linear), so a
small edit in a large object still gets a real diff; when what remains is above the
bound, the diff says how many lines changed and how big both sides are instead.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter

# difflib stays under ~0.2 s up to about this many differing lines (both sides together).
MAX_DIFF_LINES = 4000
MAX_DIFF_BYTES = 2 * 1024 * 1024

_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def bounded_unified_diff(
    old: list[str], new: list[str], fromfile: str, tofile: str, context: int = 3
) -> str:
    """``difflib.unified_diff`` text, or a one-line summary when the change is too large."""
    prefix = _common_prefix(old, new)
    suffix = _common_prefix(old[prefix:][::-1], new[prefix:][::-1])
    old_middle = old[prefix : len(old) - suffix]
    new_middle = new[prefix : len(new) - suffix]
    middle_bytes = sum(map(len, old_middle)) + sum(map(len, new_middle))
    if len(old_middle) + len(new_middle) > MAX_DIFF_LINES or middle_bytes > MAX_DIFF_BYTES:
        return _too_large(old, new, old_middle, new_middle, fromfile, tofile)
    start = max(0, prefix - context)
    old_end = min(len(old), len(old) - suffix + context)
    new_end = min(len(new), len(new) - suffix + context)
    lines = difflib.unified_diff(
        old[start:old_end], new[start:new_end], fromfile=fromfile, tofile=tofile, n=context
    )
    return "".join(_shift(line, start) for line in lines)


def _common_prefix(a: list[str], b: list[str]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def _shift(line: str, offset: int) -> str:
    """Hunk headers of a diff of slices, renumbered for the whole texts."""
    if not offset or not line.startswith("@@"):
        return line
    match = _HUNK.match(line)
    if match is None:
        return line
    old_start, old_len, new_start, new_len = match.groups()
    return (
        f"@@ -{int(old_start) + offset}{old_len or ''} +{int(new_start) + offset}{new_len or ''} @@"
        + line[match.end() :]
    )


def _too_large(
    old: list[str],
    new: list[str],
    old_middle: list[str],
    new_middle: list[str],
    fromfile: str,
    tofile: str,
) -> str:
    # Lines only on one side, counted as a multiset: linear, and exact for a pure rewrite.
    removed = Counter(old_middle)
    removed.subtract(new_middle)
    changed = sum(abs(n) for n in removed.values())
    return (
        f"--- {fromfile}\n+++ {tofile}\n"
        f"# {changed} lines changed, too large to diff "
        f"(before: {len(old)} lines, {_bytes(old)} bytes; "
        f"after: {len(new)} lines, {_bytes(new)} bytes)\n"
    )


def _bytes(lines: list[str]) -> int:
    return sum(len(line.encode("utf-8", "surrogatepass")) for line in lines)

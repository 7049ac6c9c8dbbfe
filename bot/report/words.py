"""Small wording rules shared by every comment: plurals, counts, object names."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from bot.models import ObjectChange, Violation

ACTION_WORDS = (("create", "created"), ("update", "updated"), ("delete", "deleted"))


def plural(n: int, word: str, words: str | None = None) -> str:
    """``"1 app"``, ``"2 apps"``, ``"1,500 apps"``."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def counts(parts: Iterable[tuple[int, str]]) -> str:
    """``"1 created, 2 updated"``: zero counts are left out; "" when all are zero."""
    return ", ".join(f"{n:,} {label}" for n, label in parts if n)


def change_counts(changes: Iterable[ObjectChange]) -> str:
    tally = {action: 0 for action, _ in ACTION_WORDS}
    for change in changes:
        tally[change.action] = tally.get(change.action, 0) + 1
    return counts((tally[action], label) for action, label in ACTION_WORDS)


def object_name(kind: str | None, namespace: str | None, name: str | None) -> str:
    """The one way Sluice writes an object: ``Kind namespace/name`` (``Kind name`` when
    cluster-scoped)."""
    where = f"{namespace}/{name}" if namespace else (name or "")
    return f"{kind or '?'} {where}".strip()


def change_name(change: ObjectChange) -> str:
    return object_name(change.kind, change.namespace, change.name)


def violation_object(v: Violation) -> str:
    if not (v.kind or v.name):
        return ""
    return object_name(v.kind, v.namespace, v.name)


def join_words(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def short_sha(ref: str) -> str:
    is_sha = len(ref) >= 7 and all(c in "0123456789abcdef" for c in ref.lower())
    return ref[:7] if is_sha else ref


def utc_time(when: datetime) -> str:
    """``"2026-12-05 21:10:00 UTC"``: how every comment says when it was made."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def made_line(when: datetime, verb: str = "made") -> str:
    """The small last line of a comment: ``<sub>made 2026-12-05 21:10:00 UTC</sub>``."""
    return f"<sub>{verb} {utc_time(when)}</sub>"

"""The "Changes" section of the comment: object diffs per app, near-identical diffs
grouped, oversized diffs cut in place, and every object that did not fit named.

Diffs are the part that gives way: they get whatever room the blockers, next steps,
summary and warnings left. Room for naming the objects not shown is kept before any
diff is placed, so an object is never silently dropped."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.models import ObjectChange, Report
from bot.report.escape import code, code_block, html_code, html_text
from bot.report.fit import cut_lines
from bot.report.state import is_blocking
from bot.report.words import change_counts, change_name, plural

# One object's diff never takes more than this, however much room there is.
MAX_OBJECT_CHARS = 12_000
# Below this a cut diff says too little to be worth showing.
MIN_CUT_CHARS = 300
# Identical changes to at least this many objects are shown once.
GROUP_AT = 3
GROUP_NAMES_SHOWN = 40
# At most this share of the section's room is held back for naming what is left out.
NAMES_SHARE = 0.5
HEADING = "### Changes\n\n"
_CLOSING = "</details>\n\n"
_NOTE_RESERVE = 160


@dataclass
class _Unit:
    """One diff to place: a single object, or a group of objects with the same change."""

    app: str
    changes: list[ObjectChange]
    names: list[tuple[str, str]] = field(default_factory=list)  # (app, object) per member

    @property
    def first(self) -> ObjectChange:
        return self.changes[0]


def render_changes(report: Report, room: int, full_report: str) -> str:
    """The section in at most ``room`` characters ("" when nothing changed)."""
    groups, singles = _units(report)
    if not groups and not any(singles.values()):
        return ""
    if room < len(HEADING) + _NOTE_RESERVE:
        total = sum(len(u.names) for u in groups) + sum(len(v) for v in singles.values())
        note = f"_{plural(total, 'object diff')} left out for size: all in {full_report}._\n\n"
        return note if len(note) <= room else ""
    names = [n for u in groups for n in u.names]
    names += [n for units in singles.values() for u in units for n in u.names]
    placer = _Placer(room - len(HEADING) - _NOTE_RESERVE, full_report, names)
    out = [HEADING]
    for unit in groups:
        out.append(placer.group(unit))
    apps_with_changes = [name for name, units in singles.items() if units]
    for name in apps_with_changes:
        out.append(placer.app(name, singles[name], open_=len(apps_with_changes) == 1))
    out.append(placer.omitted_note())
    return "".join(out)


def _units(report: Report) -> tuple[list[_Unit], dict[str, list[_Unit]]]:
    """Groups of ≥ GROUP_AT identical changes (across apps), and the rest per app."""
    by_key: dict[tuple[str, str, str], list[tuple[str, ObjectChange]]] = {}
    for app in report.apps:
        for change in app.changes:
            by_key.setdefault(_same_change_key(change), []).append((app.name, change))
    grouped: set[int] = set()
    groups: list[_Unit] = []
    for members in by_key.values():
        if len(members) >= GROUP_AT and members[0][1].diff:
            groups.append(
                _Unit(
                    members[0][0],
                    [c for _, c in members],
                    [(a, change_name(c)) for a, c in members],
                )
            )
            grouped.update(id(c) for _, c in members)
    ordered = sorted(report.apps, key=lambda app: not is_blocking(app))
    singles = {
        app.name: [
            _Unit(app.name, [c], [(app.name, change_name(c))])
            for c in app.changes
            if id(c) not in grouped
        ]
        for app in ordered
    }
    return groups, singles


def _same_change_key(change: ObjectChange) -> tuple[str, str, str]:
    body = diff_body(change.diff)
    for value, token in ((change.name, "\0name"), (change.namespace, "\0ns")):
        if value:
            body = body.replace(value, token)
    return change.action, change.kind, body


def diff_body(diff: str) -> str:
    """A unified diff without its ``---``/``+++`` lines: the object header says it."""
    lines = diff.splitlines(keepends=True)
    while lines and lines[0].startswith(("--- ", "+++ ")):
        lines.pop(0)
    return "".join(lines)


class _Placer:
    """Places diffs in order while keeping room to name what is not placed yet.

    ``left`` is the room not used by placed text; ``pending`` what naming every object
    not placed yet would cost. Diffs may use ``left`` minus that cost, but never more
    than :data:`NAMES_SHARE` of the room is held for names: past it, the note ends in
    "and N more" and the diffs of the first apps still show."""

    def __init__(self, room: int, full_report: str, names: list[tuple[str, str]]) -> None:
        self.left = room
        self.full_report = full_report
        self.pending = sum(len(_name_item(n)) for n in names)
        self.cap = int(room * NAMES_SHARE)
        self.omitted: list[tuple[str, str]] = []

    def _free(self, names: list[tuple[str, str]]) -> int:
        """Room for a block that places ``names``."""
        after = self.pending - sum(len(_name_item(n)) for n in names)
        return self.left - min(after, self.cap)

    def _place(self, text: str, names: list[tuple[str, str]]) -> str:
        self.left -= len(text)
        self.pending -= sum(len(_name_item(n)) for n in names)
        return text

    def _block(self, unit: _Unit, header: str, room: int) -> str | None:
        """``header`` and the unit's diff in ``room``, cut at a line boundary when
        needed; None if it cannot be shown."""
        body = diff_body(unit.first.diff) or "(no textual difference)\n"
        available = min(room, MAX_OBJECT_CHARS)
        fixed = len(header) + len(code_block("", "diff")) + 2
        full = f"{header}{code_block(body, 'diff')}\n"
        if len(full) <= available:
            return full
        kept, cut, total = cut_lines(body, available - fixed - _NOTE_RESERVE - 64)
        if len(kept) < MIN_CUT_CHARS:
            return None
        note = (
            f"_… {plural(cut, 'more line')} of {total:,} cut here; the whole diff is in "
            f"{self.full_report}._\n\n"
        )
        return f"{header}{code_block(kept, 'diff')}{note}"

    def group(self, unit: _Unit) -> str:
        first = unit.first
        n = len(unit.changes)
        shown = [code(f"{o} ({a})") for a, o in unit.names[:GROUP_NAMES_SHOWN]]
        if n > GROUP_NAMES_SHOWN:
            shown.append(f"and {n - GROUP_NAMES_SHOWN:,} more, named in {self.full_report}")
        header = (
            f"**The same change in {plural(n, first.kind)}** ({first.action}): "
            f"{', '.join(shown)}\n\n"
        )
        block = self._block(unit, header, self._free(unit.names))
        if block is None:
            self.omitted += unit.names
            return ""
        return self._place(block, unit.names)

    def app(self, name: str, units: list[_Unit], *, open_: bool) -> str:
        opening = (
            f"<details{' open' if open_ else ''}><summary>{html_code(name)}: "
            f"{html_text(change_counts(c for u in units for c in u.changes))}</summary>\n\n"
        )
        frame = len(opening) + len(_CLOSING)
        blocks = []
        for unit in units:
            header = f"**{unit.first.action}** {code(change_name(unit.first))}\n\n"
            room = self._free(unit.names) - (0 if blocks else frame)
            block = self._block(unit, header, room)
            if block is None:
                self.omitted += unit.names
                continue
            if not blocks:
                self.left -= frame
            blocks.append(self._place(block, unit.names))
        if not blocks:
            return ""
        return opening + "".join(blocks) + _CLOSING

    def omitted_note(self) -> str:
        if not self.omitted:
            return ""
        room = self.left + _NOTE_RESERVE
        lead = (
            f"**{plural(len(self.omitted), 'object diff')} left out for size**, all in "
            f"{self.full_report}: "
        )
        items: list[str] = []
        used = len(lead) + 4
        for i, name in enumerate(self.omitted):
            item = _name_item(name)
            rest = len(self.omitted) - i - 1
            tail = f"and {rest:,} more" if rest else ""
            if used + len(item) + len(tail) + 4 > room:
                items.append(f"and {len(self.omitted) - i:,} more")
                break
            items.append(item.rstrip(", "))
            used += len(item)
        return lead + ", ".join(items) + ".\n\n"


def _name_item(name: tuple[str, str]) -> str:
    app, obj = name
    return f"{code(obj)} in {code(app)}, "

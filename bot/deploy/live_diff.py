"""What a pull request would change in the live cluster, asked of the puller.

The preview diffs base against head in Git; the puller's ``POST /v1/diff`` dry-runs
the head's objects against the cluster as it is now, so drift and out-of-band
changes show too. The puller masks Secrets; as a second line of defence a diff
that still shows one of the head's Secret values is withheld here.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass, replace

from bot.deploy.puller_client import PullerClient, PullerError, PullerUnknownApp, PullerUnreachable
from bot.models import K8sObject, ObjectChange, Report

NOT_MANAGED = "not managed by the puller"
WITHHELD = "(diff withheld: it would show a Secret value)\n"
# Shorter values match too much unrelated text to be worth looking for.
_MIN_SECRET_LEN = 4


@dataclass(frozen=True)
class LiveDiff:
    """One app's live diff; ``problem`` set (and ``changes`` empty) when there is none."""

    app: str
    changes: tuple[ObjectChange, ...] = ()
    problem: str | None = None


def live_diffs(puller: PullerClient, report: Report) -> list[LiveDiff]:
    """The live diff of every app the report changes or adds, in report order.

    Never raises for a puller failure: the preview must post without it. Once
    the puller is unreachable the remaining apps are not asked again."""
    out: list[LiveDiff] = []
    unreachable: str | None = None
    for app in report.apps:
        if app.status not in ("changed", "added"):
            continue
        if unreachable is not None:
            out.append(LiveDiff(app.name, problem=unreachable))
            continue
        try:
            changes = puller.diff(app.name, app.objects)
        except PullerUnknownApp:
            out.append(LiveDiff(app.name, problem=NOT_MANAGED))
        except PullerUnreachable as exc:
            unreachable = f"live diff unavailable: {exc}"
            out.append(LiveDiff(app.name, problem=unreachable))
        except PullerError as exc:
            out.append(LiveDiff(app.name, problem=f"live diff unavailable: {exc}"))
        else:
            out.append(LiveDiff(app.name, tuple(withhold_secret_values(changes, app.objects))))
    return out


def withhold_secret_values(
    changes: list[ObjectChange], objects: list[K8sObject]
) -> list[ObjectChange]:
    """``changes`` with the diff of any change that shows a value (plain or base64) of
    a Secret in ``objects`` replaced by a note."""
    values = _secret_values(objects)
    if not values:
        return changes
    return [
        replace(change, diff=WITHHELD) if any(v in change.diff for v in values) else change
        for change in changes
    ]


def _secret_values(objects: list[K8sObject]) -> set[str]:
    values: set[str] = set()
    for obj in objects:
        if obj.get("kind") != "Secret" or obj.get("apiVersion") != "v1":
            continue
        for field in ("data", "stringData"):
            mapping = obj.get(field)
            if not isinstance(mapping, dict):
                continue
            for value in mapping.values():
                if isinstance(value, str):
                    values.update(_forms(value, base64_encoded=field == "data"))
    return {v for v in values if len(v) >= _MIN_SECRET_LEN}


def _forms(value: str, *, base64_encoded: bool) -> set[str]:
    """The ways ``value`` could be spelled in a diff: as stored, decoded, encoded."""
    forms = {value}
    if base64_encoded:
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            forms.add(base64.b64decode(value, validate=True).decode())
    else:
        forms.add(base64.b64encode(value.encode()).decode())
    # A diff shows a multi-line value (a key, a certificate) one line at a time.
    # PEM armour lines are the same in every key, so they prove nothing.
    lines = {line.strip() for form in forms for line in form.splitlines()}
    return forms | {line for line in lines if not line.startswith("-----")}

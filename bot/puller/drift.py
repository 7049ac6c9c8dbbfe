"""Drift: how the live cluster differs from what the puller applied, as masked diffs.

Only the fields the desired object sets are compared (the live object is projected
onto the desired object's key paths), so what the API server and controllers add —
defaults, status, managedFields, other managers' labels — never counts as drift.
Secrets are masked by :func:`bot.diff.diff_objects`; the puller's own bookkeeping
annotation never shows (it is a hash over Secret values).
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.diff import diff_objects, is_secret, normalize
from bot.models import ObjectChange

HASH_ANNOTATION = "sluice.dev/applied-hash"
Json = dict[str, Any]


@dataclass(frozen=True)
class Observed:
    """One object as desired and as found live; either side may be None."""

    desired: Json | None
    live: Json | None


def project(live: Any, desired: Any) -> Any:
    """``live`` cut down to the key paths ``desired`` sets. Lists of equal length are
    projected item by item (containers gain defaulted fields); a list whose length
    changed is kept whole, since every item of it may be new."""
    if isinstance(desired, dict) and isinstance(live, dict):
        return {key: project(live[key], value) for key, value in desired.items() if key in live}
    if isinstance(desired, list) and isinstance(live, list) and len(desired) == len(live):
        return [project(item, want) for item, want in zip(live, desired, strict=True)]
    return live


def as_stored(desired: Json) -> Json:
    """``desired`` in the form the API server stores it: a Secret's ``stringData``
    folded into ``data`` (base64), as the server does on every write."""
    if desired.get("kind") != "Secret" or "/" in str(desired.get("apiVersion") or ""):
        return desired
    string_data = desired.get("stringData")
    if not isinstance(string_data, dict):
        return desired
    out = {k: v for k, v in desired.items() if k != "stringData"}
    data = dict(out.get("data") or {})
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    out["data"] = data
    return out


def without_bookkeeping(obj: Json) -> Json:
    """A copy without the applied-hash annotation (and an annotations map it leaves empty)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict) or HASH_ANNOTATION not in annotations:
        return obj
    out = copy.copy(obj)
    out["metadata"] = dict(meta)
    rest = {k: v for k, v in annotations.items() if k != HASH_ANNOTATION}
    if rest:
        out["metadata"]["annotations"] = rest
    else:
        del out["metadata"]["annotations"]
    return out


def comparable(desired: Json) -> Json:
    """The desired object as drift compares it."""
    return normalize(without_bookkeeping(as_stored(desired)), None)


def live_projection(live: Json, desired: Json) -> Json:
    """The live object as drift compares it against ``desired``."""
    want = comparable(desired)
    view = project(normalize(without_bookkeeping(live), None), want)
    # Identity always shows, so a diff names the object even if a field moved.
    view["apiVersion"] = want.get("apiVersion", view.get("apiVersion"))
    view["kind"] = want.get("kind", view.get("kind"))
    return view


def has_drifted(live: Json, desired: Json) -> bool:
    return live_projection(live, desired) != comparable(desired)


def drift_changes(observed: Iterable[Observed], *, secret_key: bytes) -> list[ObjectChange]:
    """Masked changes that would bring the live side back to the desired side:
    ``create`` (missing live), ``update`` (a desired field differs) and ``delete``
    (live, no longer desired)."""
    live_side: list[Json] = []
    desired_side: list[Json] = []
    changed = False
    for item in observed:
        if item.desired is not None:
            want = comparable(item.desired)
            if item.live is not None:
                seen = live_projection(item.live, item.desired)
                if seen == want and not is_secret(want):
                    # Unchanged: no change to show. Secrets always go in: their values
                    # are what every other object is masked with.
                    continue
                changed = changed or seen != want
                live_side.append(seen)
            else:
                changed = True
            desired_side.append(want)
        elif item.live is not None:
            changed = True
            live_side.append(normalize(without_bookkeeping(item.live), None))
    if not changed:
        return []  # the no-op cycle: nothing to diff, nothing to mask
    return diff_objects(live_side, desired_side, secret_key=secret_key)


def result_changes(
    before: Iterable[Json], after: Iterable[Json], *, secret_key: bytes
) -> list[ObjectChange]:
    """Masked changes between whole objects (live now, and as a dry run would leave it)."""
    return diff_objects(
        [without_bookkeeping(o) for o in before],
        [without_bookkeeping(o) for o in after],
        secret_key=secret_key,
    )

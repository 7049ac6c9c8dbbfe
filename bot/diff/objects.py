"""Object-level diff: match objects across two revisions and diff them as YAML."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import partial

import yaml

from bot.diff.leaks import SecretValues
from bot.diff.normalize import ObjectKey, normalize, object_key
from bot.diff.secrets import mask_secret
from bot.diff.textdiff import bounded_unified_diff
from bot.models import Action, K8sObject, ObjectChange

ACTIONS: tuple[Action, ...] = ("create", "update", "delete")

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _DiffDumper(_Dumper):  # type: ignore[misc, valid-type]
    """Safe dumper that writes multi-line strings as literal blocks, so a changed
    line in a ConfigMap script shows as one changed line, not one changed string."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_DiffDumper.add_representer(str, _represent_str)


def to_yaml(obj: K8sObject) -> str:
    # No line folding: a long value stays one line, so one change is one changed line.
    return yaml.dump(
        obj, Dumper=_DiffDumper, sort_keys=True, default_flow_style=False, width=1_000_000
    )


def index_objects(
    objects: Iterable[K8sObject],
    *,
    secret_key: bytes,
    default_namespace: str | None = None,
    normalized: bool = False,
    leaks: SecretValues | None = None,
) -> dict[ObjectKey, tuple[K8sObject, K8sObject]]:
    """``key → (normalized, normalized and masked)``. When a key occurs twice the last
    one wins, as it would when the objects are applied in order; see
    :func:`duplicate_keys` to report such keys. ``leaks``: Secret values to mask
    wherever else they appear (a ConfigMap a replacement copied one into)."""
    out: dict[ObjectKey, tuple[K8sObject, K8sObject]] = {}
    for position, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise ValueError(f"object #{position} is a {type(obj).__name__}, not a mapping")
        norm = obj if normalized else normalize(obj, default_namespace)
        masked = mask_secret(norm, secret_key)
        if leaks:
            masked = leaks.mask_object(masked, secret_key)
        out[object_key(norm)] = (norm, masked)
    return out


def duplicate_keys(
    objects: Iterable[K8sObject], default_namespace: str | None = None
) -> list[ObjectKey]:
    """Keys that occur more than once in ``objects``, sorted."""
    counts = Counter(object_key(normalize(o, default_namespace)) for o in objects)
    return sorted((k for k, n in counts.items() if n > 1), key=ObjectKey.sort_key)


def diff_objects(
    base: list[K8sObject],
    head: list[K8sObject],
    *,
    secret_key: bytes,
    context: int = 3,
    default_namespace: str | None = None,
    normalized: bool = False,
) -> list[ObjectChange]:
    """Changes from ``base`` to ``head``, sorted by (group, kind, namespace, name).

    Objects match by group, kind, namespace and name, so an apiVersion bump within
    a group is an update. Both sides are normalized (``default_namespace`` fills in
    namespaced objects that name none) and Secrets are masked before any text is
    produced; a value of any Secret on either side is masked wherever else it appears
    (see :mod:`bot.diff.leaks`). Within one side a duplicated key keeps its last
    object. Callers that already ran :func:`normalize` on both sides pass ``normalized=True``."""
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    if not secret_key:
        raise ValueError("a non-empty secret_key is required to mask Secrets")
    index = partial(
        index_objects,
        secret_key=secret_key,
        default_namespace=default_namespace,
        normalized=normalized,
        leaks=SecretValues.of([*base, *head]),
    )
    before, after = index(base), index(head)
    changes: list[ObjectChange] = []
    for key in sorted(before.keys() | after.keys(), key=ObjectKey.sort_key):
        old = before.get(key)
        new = after.get(key)
        if old is not None and new is not None and old[0] == new[0]:
            continue
        changes.append(_change(key, old, new, context))
    return changes


def _change(
    key: ObjectKey,
    old: tuple[K8sObject, K8sObject] | None,
    new: tuple[K8sObject, K8sObject] | None,
    context: int,
) -> ObjectChange:
    action: Action = "create" if old is None else "delete" if new is None else "update"
    old_text = to_yaml(old[1]) if old is not None else ""
    new_text = to_yaml(new[1]) if new is not None else ""
    label = key.label()
    diff = bounded_unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        fromfile=f"a/{label}" if old is not None else "/dev/null",
        tofile=f"b/{label}" if new is not None else "/dev/null",
        context=context,
    )
    if not diff:
        # The objects differ but their masked text does not: two Secret values whose
        # fingerprints collide. Still a change; say so without showing anything.
        diff = f"--- a/{label}\n+++ b/{label}\n# a Secret value changed (fingerprints collide)\n"
    source = new if new is not None else old
    assert source is not None
    return ObjectChange(
        action=action,
        api_version=str(source[0].get("apiVersion") or ""),
        kind=key.kind,
        namespace=key.namespace,
        name=key.name,
        diff=diff,
    )


def summarize(changes: Iterable[ObjectChange]) -> dict[str, int]:
    """Count of changes per action; every action is present."""
    counts = dict.fromkeys(ACTIONS, 0)
    for change in changes:
        counts[change.action] += 1
    return counts

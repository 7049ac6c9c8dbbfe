"""Secret values outside Secrets: find them in rendered objects and text, and mask them.

A Secret's value can reach the report without being in a Secret: Kustomize
``replacements`` copy it into a ConfigMap, a Helm ``fail`` or ``required`` message
quotes the value that feeds it, kubectl echoes a generator literal. Every value of
every Secret in an app's render (base and head) is collected in each form it can
be spelled in: as stored, base64-decoded, base64-encoded, whitespace-collapsed (as
error messages print it) and line by line (as a diff shows a multi-line value).
Each occurrence is replaced by the fingerprint the Secret diff shows for that
value, ``<secret sha:…>``, so a reviewer can still tell which Secret leaked.

Forms shorter than :data:`MIN_MASKED_CHARS` are left alone: a value such as
``1``, ``true`` or ``admin`` would otherwise mask half of every report.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from bot.diff.secrets import is_secret, placeholder
from bot.models import AppReport, K8sObject, Violation

MIN_MASKED_CHARS = 6
RULE = "secret_value_in_plain_object"


def values_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern matching any of ``values``, longer ones first, so a value is never
    left half-masked by a shorter one it contains; None when there is nothing to match."""
    ordered = sorted({v for v in values if v}, key=len, reverse=True)
    return re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None


def replace_all(text: str, values: Iterable[str], redact: Callable[[str], str]) -> str:
    """Each occurrence of any of ``values`` replaced by ``redact(value)``, in one scan."""
    if not text:
        return text
    pattern = values_pattern(values)
    return pattern.sub(lambda match: redact(match.group(0)), text) if pattern else text


@dataclass(frozen=True)
class SecretValues:
    """Spellings of Secret values → the decoded value their fingerprint is taken over."""

    forms: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, objects: Iterable[K8sObject]) -> SecretValues:
        forms: dict[str, bytes] = {}
        for obj in objects:
            if not is_secret(obj):
                continue
            for section in ("data", "stringData"):
                values = obj.get(section)
                if isinstance(values, dict):
                    for value in values.values():
                        if isinstance(value, str):
                            _add_forms(forms, value, base64_encoded=section == "data")
        return cls(forms)

    def __bool__(self) -> bool:
        return bool(self.forms)

    @cached_property
    def pattern(self) -> re.Pattern[str] | None:
        """Built once per Secret set: escaping and compiling hundreds of spellings costs
        far more than one scan, and an object's every string is scanned."""
        return values_pattern(self.forms)

    def mask(self, text: str, key: bytes) -> str:
        """``text`` with every spelling of a Secret value replaced by its fingerprint."""
        pattern = self.pattern
        if pattern is None or not text:
            return text
        return pattern.sub(lambda match: placeholder(self.forms[match.group(0)], key), text)

    def mask_object(self, obj: Any, key: bytes) -> Any:
        """A copy of ``obj`` with Secret values masked inside every string (keys included)."""
        if isinstance(obj, str):
            return self.mask(obj, key)
        if isinstance(obj, list):
            return [self.mask_object(item, key) for item in obj]
        if isinstance(obj, dict):
            return {self.mask_object(k, key): self.mask_object(v, key) for k, v in obj.items()}
        return obj


def _add_forms(forms: dict[str, bytes], value: str, *, base64_encoded: bool) -> None:
    raw = value.encode("utf-8")
    spellings = {value}
    if base64_encoded:
        try:
            raw = base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            pass  # shown as "(not base64)" by the Secret diff; mask it as it stands
        else:
            spellings.add(raw.decode("utf-8", "replace"))
    else:
        spellings.add(base64.b64encode(raw).decode())
    for spelling in list(spellings):
        spellings.add(" ".join(spelling.split()))
        # PEM armour lines are the same in every key: they prove nothing and hide nothing.
        spellings |= {
            line.strip() for line in spelling.splitlines() if not line.strip().startswith("-----")
        }
    for spelling in spellings:
        if len(spelling) >= MIN_MASKED_CHARS:
            forms.setdefault(spelling, raw)


def found_values(values: SecretValues, obj: Any) -> set[bytes]:
    """The Secret values (decoded) that occur in any string of ``obj``."""
    hits: set[bytes] = set()
    if isinstance(obj, str):
        # The pattern rules most strings out in one scan; a string it matches is checked
        # form by form, so a value inside another one's spelling is found too.
        if values.pattern is not None and values.pattern.search(obj):
            hits |= {values.forms[form] for form in values.forms if form in obj}
    elif isinstance(obj, list):
        for item in obj:
            hits |= found_values(values, item)
    elif isinstance(obj, dict):
        for name, item in obj.items():
            hits |= found_values(values, name) | found_values(values, item)
    return hits


def guard_app_report(
    report: AppReport,
    base_objects: Iterable[K8sObject],
    head_objects: Iterable[K8sObject],
    key: bytes,
) -> None:
    """Mask Secret values of either side in the app's texts; warn for each plain object
    on the head that holds one. Sluice raises this warning itself, so no policy a pull
    request brings can switch it off."""
    head_objects = list(head_objects)
    values = SecretValues.of([*base_objects, *head_objects])
    if not values:
        return
    if report.error:
        report.error = values.mask(report.error, key)
    policy = report.policy
    violations = [replace(v, msg=values.mask(v.msg, key)) for v in policy.violations]
    for obj in head_objects:
        hits = set() if is_secret(obj) else found_values(values, obj)
        if hits:
            violations.append(_leak_violation(obj, sorted(placeholder(v, key) for v in hits)))
    added = len(violations) > len(policy.violations)
    report.policy = replace(
        policy,
        verdict="warn" if added and policy.verdict == "pass" else policy.verdict,
        violations=violations,
        error=values.mask(policy.error, key) if policy.error else policy.error,
    )


def _leak_violation(obj: K8sObject, fingerprints: list[str]) -> Violation:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    kind, name = str(obj.get("kind") or ""), str(metadata.get("name") or "")
    return Violation(
        severity="warn",
        rule=RULE,
        msg=(
            f"{kind} {name} holds the value of a Secret ({', '.join(fingerprints)}); "
            "anyone who can read this object can read it: reference the Secret instead"
        ),
        kind=kind,
        namespace=metadata.get("namespace"),
        name=name,
    )

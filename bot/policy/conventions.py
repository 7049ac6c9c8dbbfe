"""conftest conventions: which rules gate, what their values mean, exceptions.

A rule named ``deny``/``violation`` (optionally followed by ``_suffix``) fails the
gate, ``warn``/``warn_suffix`` warns.  Each value is a set of messages: strings, or
objects with a string ``msg`` (other keys are allowed and ignored).  A boolean rule
(``deny_x if {...}``) that is true counts as one violation named after the rule.
``exception contains ["suffix", ...]`` exempts ``deny_suffix``/``warn_suffix`` for
the object being evaluated.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from bot.models import K8sObject, PolicyResult, Violation

FAILURE_RULE = re.compile(r"^(deny|violation)(_[a-zA-Z0-9]+)*$")
WARNING_RULE = re.compile(r"^warn(_[a-zA-Z0-9]+)*$")
RULE_PREFIX = re.compile(r"^(deny|violation|warn)_?")


class PolicyOutputError(Exception):
    """A gating rule produced a value the conventions cannot interpret."""


def severity_of(rule: str) -> Literal["deny", "warn"] | None:
    if FAILURE_RULE.match(rule):
        return "deny"
    if WARNING_RULE.match(rule):
        return "warn"
    return None


def exempted_rules(document: dict[str, Any]) -> set[str]:
    """Rule suffixes named by ``exception`` (conftest: ``exception[_][_]``)."""
    value = document.get("exception")
    if value is None:
        return set()
    if not isinstance(value, list):
        raise PolicyOutputError("rule exception must be a set of rule-name lists")
    names: set[str] = set()
    for entry in value:
        if not isinstance(entry, list) or not all(isinstance(n, str) for n in entry):
            raise PolicyOutputError(
                f"rule exception must contain lists of rule names, got {_short(entry)}"
            )
        names.update(entry)
    return names


def document_from_entries(rules: list[str], entries: Any) -> dict[str, Any]:
    """``{rule: value}`` for the defined rules of one gate result.

    The gate module returns one entry per rule, in ``rules`` order: ``[value]``, or
    ``[]`` where the rule is undefined for the object.
    """
    if (
        not isinstance(entries, list)
        or len(entries) != len(rules)
        or not all(isinstance(e, list) and len(e) <= 1 for e in entries)
    ):
        raise PolicyOutputError("the policy gate returned a malformed result")
    # An empty set or false (the common case) reports nothing: leave it out early.
    return {
        rule: entry[0]
        for rule, entry in zip(rules, entries, strict=True)
        if entry and entry[0] != [] and entry[0] is not False
    }


def violations_for(rules: list[str], entries: Any, obj: K8sObject) -> list[Violation]:
    """The violations the gate ``rules`` (with their ``entries``) report for ``obj``."""
    document = document_from_entries(rules, entries)
    if not document:
        return []
    exempt = exempted_rules(document)
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    found: list[Violation] = []
    for rule in sorted(document):
        severity = severity_of(rule)
        if severity is None or RULE_PREFIX.sub("", rule) in exempt:
            continue
        for msg in sorted(_messages(rule, document[rule])):
            found.append(
                Violation(
                    severity=severity,
                    rule=rule,
                    msg=msg,
                    kind=obj.get("kind"),
                    namespace=metadata.get("namespace"),
                    name=metadata.get("name"),
                )
            )
    return found


def result_for(rules: list[str], objects: list[K8sObject], results: list[Any]) -> PolicyResult:
    """Combine the per-object gate results into one verdict."""
    violations: list[Violation] = []
    for obj, entries in zip(objects, results, strict=True):
        try:
            violations.extend(violations_for(rules, entries, obj))
        except PolicyOutputError as exc:
            return error_result(f"{describe_object(obj)}: {exc}")
    return PolicyResult(verdict=verdict_of(violations), violations=violations)


def verdict_of(violations: list[Violation]) -> Literal["pass", "warn", "fail"]:
    severities = {v.severity for v in violations}
    if "deny" in severities:
        return "fail"
    return "warn" if "warn" in severities else "pass"


def error_result(message: str) -> PolicyResult:
    return PolicyResult(verdict="error", error=message)


def describe_object(obj: Any) -> str:
    if not isinstance(obj, dict):
        return "object"
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = metadata.get("name") or "?"
    if metadata.get("namespace"):
        name = f"{metadata['namespace']}/{name}"
    return f"{obj.get('kind') or 'object'} {name}"


def _messages(rule: str, value: Any) -> list[str]:
    if value is True:
        return [rule]
    if value is False:
        return []
    if not isinstance(value, list):
        raise PolicyOutputError(
            f"rule {rule} must be a set of messages or a boolean, got {_short(value)}"
        )
    messages = []
    for item in value:
        if isinstance(item, str):
            messages.append(item)
        elif isinstance(item, dict) and isinstance(item.get("msg"), str):
            messages.append(item["msg"])
        else:
            raise PolicyOutputError(
                f"rule {rule} must produce strings or objects with a string msg, got {_short(item)}"
            )
    return messages


def _short(value: Any) -> str:
    """A type description, never the value: values may hold Secret data."""
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:5]}"
    return f"a {type(value).__name__}"

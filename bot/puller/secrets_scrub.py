"""Cut a Secret's values out of text about it (an API server's error message)."""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Any

PLACEHOLDER = "<redacted>"
# Shorter values would cut ordinary words out of messages; they carry little anyway.
MIN_LENGTH = 4


def scrub(text: str, obj: dict[str, Any]) -> str:
    """``text`` with every value of ``obj`` (if it is a Secret) replaced by a placeholder,
    in its stored (base64) and decoded forms."""
    if obj.get("kind") != "Secret":
        return text
    for value in sorted(_values(obj), key=len, reverse=True):
        if len(value) >= MIN_LENGTH:
            text = text.replace(value, PLACEHOLDER)
    return text


def _values(obj: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for value in (obj.get("data") or {}).values():
        if not isinstance(value, str):
            continue
        found.add(value)
        with contextlib.suppress(binascii.Error, ValueError):
            found.add(base64.b64decode(value, validate=True).decode("utf-8", "replace"))
    for value in (obj.get("stringData") or {}).values():
        text = str(value)
        found.add(text)
        found.add(base64.b64encode(text.encode()).decode())
    return found

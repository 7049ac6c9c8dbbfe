"""Size bounds of Sluice's on-disk caches (exports and renders), from the environment.

``SLUICE_EXPORT_CACHE_MAX_BYTES`` and ``SLUICE_RENDER_CACHE_MAX_BYTES`` take a
byte count with an optional ``K``/``M``/``G`` suffix (powers of 1024, with or
without a trailing ``i``/``iB``). Both caches evict least recently used entries
to stay under their bound and never evict an entry in use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

EXPORT_ENV = "SLUICE_EXPORT_CACHE_MAX_BYTES"
RENDER_ENV = "SLUICE_RENDER_CACHE_MAX_BYTES"
DEFAULT_EXPORT_MAX_BYTES = 1024**3
DEFAULT_RENDER_MAX_BYTES = 256 * 1024**2

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)(?:i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class CacheSizeError(ValueError):
    """A cache size setting is not a size."""


def parse_size(text: str, name: str) -> int:
    match = _SIZE.match(text)
    if match is None:
        raise CacheSizeError(
            f"{name}: {text!r} is not a size (a byte count, optionally with K, M or G)"
        )
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def max_bytes(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    """The bound ``name`` sets in the environment, else ``default``."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return parse_size(value, name) if value else default

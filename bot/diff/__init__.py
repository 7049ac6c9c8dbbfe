"""Normalize rendered objects, diff them per object, and mask Secrets.

This package computes; it never prints or posts.
"""

from __future__ import annotations

from bot.diff.normalize import (
    CLUSTER_SCOPED_KINDS,
    ObjectKey,
    api_group,
    is_namespaced,
    normalize,
    object_key,
)
from bot.diff.objects import diff_objects, duplicate_keys, summarize, to_yaml
from bot.diff.secrets import (
    InstallationKeyError,
    fingerprint,
    is_secret,
    load_or_create_key,
    mask_secret,
)

__all__ = [
    "CLUSTER_SCOPED_KINDS",
    "InstallationKeyError",
    "ObjectKey",
    "api_group",
    "diff_objects",
    "duplicate_keys",
    "fingerprint",
    "is_namespaced",
    "is_secret",
    "load_or_create_key",
    "mask_secret",
    "normalize",
    "object_key",
    "summarize",
    "to_yaml",
]

"""Secret masking: a Secret's values never reach a diff, a report or a log.

Each value becomes ``<secret sha:1a2b3c4d>``, the first 8 hex digits of an
HMAC-SHA256 under a per-installation key over the *decoded* value. Reviewers can
still see that a value was added, removed, changed or kept, and that ``data`` and
``stringData`` hold the same value, but a fingerprint cannot be looked up in a
table of common passwords computed elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from bot.diff.normalize import api_group
from bot.models import K8sObject

KEY_BYTES = 32
FINGERPRINT_HEX_DIGITS = 8

# Annotations known to carry a copy of the whole object (and so of its values).
CONFIG_COPY_ANNOTATIONS: frozenset[str] = frozenset(
    {"kubectl.kubernetes.io/last-applied-configuration"}
)


class InstallationKeyError(Exception):
    """The per-installation fingerprint key file is unusable."""


def load_or_create_key(path: Path) -> bytes:
    """The installation's fingerprint key: read from ``path``, or 32 random bytes
    written there (mode 0600) if the file does not exist yet.

    Creation is atomic and never replaces a key another process created first."""
    path = Path(path)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        # link() fails if the name exists: the first writer wins, everyone reads its key.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise InstallationKeyError(
            f"fingerprint key file {path} holds {len(key)} bytes, expected {KEY_BYTES}; "
            "delete it to generate a new key"
        )
    return key


def fingerprint(value: bytes, key: bytes) -> str:
    """First 8 hex digits of HMAC-SHA256(key, value)."""
    if not key:
        raise ValueError("a non-empty fingerprint key is required")
    return hmac.new(key, value, hashlib.sha256).hexdigest()[:FINGERPRINT_HEX_DIGITS]


def placeholder(value: bytes, key: bytes, note: str = "") -> str:
    suffix = f" {note}" if note else ""
    return f"<secret sha:{fingerprint(value, key)}{suffix}>"


def is_secret(obj: Any) -> bool:
    """A core-group ``Secret`` (``apiVersion: v1``, or none given)."""
    return (
        isinstance(obj, dict)
        and obj.get("kind") == "Secret"
        and api_group(str(obj.get("apiVersion") or "")) == ""
    )


def mask_secret(obj: K8sObject, key: bytes) -> K8sObject:
    """A copy of ``obj`` that is safe to show.

    For a Secret every value in ``data`` and ``stringData`` becomes a fingerprint
    placeholder; its other fields stay visible. For every object, annotations that
    carry a copy of a Secret (such as kubectl's last-applied-configuration) are
    masked inside, or replaced by a fingerprint when they cannot be parsed.
    ``obj`` itself is left untouched."""
    out = dict(obj)
    if is_secret(out):
        for field in ("data", "stringData"):
            if field in out:
                out[field] = _mask_values(out[field], key, base64_encoded=field == "data")
    if isinstance(out.get("items"), list):  # a v1 List
        out["items"] = [mask_secret(i, key) if isinstance(i, dict) else i for i in out["items"]]
    metadata = out.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("annotations"), dict):
        out["metadata"] = {
            **metadata,
            "annotations": {
                name: _mask_annotation(name, value, key)
                for name, value in metadata["annotations"].items()
            },
        }
    return out


def _mask_values(values: Any, key: bytes, *, base64_encoded: bool) -> Any:
    if not isinstance(values, dict):
        # Not a mapping (malformed): hide it whole rather than guess what it holds.
        return placeholder(_raw_bytes(values), key)
    return {k: _mask_value(v, key, base64_encoded=base64_encoded) for k, v in values.items()}


def _mask_value(value: Any, key: bytes, *, base64_encoded: bool) -> str:
    if base64_encoded and isinstance(value, str):
        try:
            decoded = base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            return placeholder(value.encode("utf-8"), key, "(not base64)")
        return placeholder(decoded, key)
    return placeholder(_raw_bytes(value), key)


def _raw_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    return json.dumps(value, sort_keys=True, default=str).encode("utf-8")


def _mask_annotation(name: str, value: Any, key: bytes) -> Any:
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    if name not in CONFIG_COPY_ANNOTATIONS and not stripped.startswith(("{", "[")):
        return value
    try:
        parsed = json.loads(stripped)
    except ValueError:
        # A copy we cannot look into may hold anything: fail closed.
        return placeholder(value.encode("utf-8"), key, "(unparsed annotation)")
    masked = _mask_embedded(parsed, key)
    if masked == parsed:
        return value
    return json.dumps(masked, sort_keys=True, separators=(",", ":"))


def _mask_embedded(node: Any, key: bytes) -> Any:
    """Mask an object copy found in an annotation: any ``data``/``stringData`` mapping
    at any depth is treated as Secret content, whatever the kind claims."""
    if isinstance(node, list):
        return [_mask_embedded(n, key) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in ("data", "stringData") and (isinstance(v, dict) or is_secret(node)):
            out[k] = _mask_values(v, key, base64_encoded=k == "data")
        elif k == "annotations" and isinstance(v, dict):
            out[k] = {n: _mask_annotation(n, a, key) for n, a in v.items()}
        else:
            out[k] = _mask_embedded(v, key)
    return out

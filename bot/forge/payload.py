"""Reading forge webhook payloads: every missing or mistyped field is a ``PayloadError``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bot.forge.events import PayloadError


def header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value or not value.strip():
        raise PayloadError(f"missing {name} header")
    if len(value) > 200:
        raise PayloadError(f"{name} header is too long")
    return value.strip()


def json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PayloadError("body is not valid JSON") from None
    except RecursionError:
        raise PayloadError("body JSON is nested too deeply") from None
    except ValueError:  # Python's limit on integer digits (sys.get_int_max_str_digits)
        raise PayloadError("body JSON has a number with too many digits") from None
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object")
    return payload


def field_dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise PayloadError(f"payload field {key!r} is missing or not an object")
    return value


def field_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"payload field {key!r} is missing or not a string")
    return value


def field_int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"payload field {key!r} is missing or not an integer")
    return value


def login_of(user: Any) -> str | None:
    if isinstance(user, dict):
        name = user.get("login") or user.get("username")
        return name if isinstance(name, str) else None
    return None

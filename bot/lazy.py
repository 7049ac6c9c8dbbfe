"""Lazy re-exports for a package ``__init__``: its public names load on first use.

An application package uses it so that importing one of its modules (the puller
imports ``bot.deploy.ledger``; the HTTP process imports ``bot.server.web``) does
not load the whole application with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) resolving ``name`` from ``exports[name]``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module), name)

    return __getattr__

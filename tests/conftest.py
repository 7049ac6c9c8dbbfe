"""Test-session setup shared by every test module.

Tests never depend on the machine's git identity or write to the user's cache.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.pgkit"]

_IDENTITY = {
    "GIT_AUTHOR_NAME": "Sluice Test",
    "GIT_AUTHOR_EMAIL": "test@sluice.invalid",
    "GIT_COMMITTER_NAME": "Sluice Test",
    "GIT_COMMITTER_EMAIL": "test@sluice.invalid",
}


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory):
    saved = {k: os.environ.get(k) for k in [*_IDENTITY, "SLUICE_CACHE_DIR"]}
    os.environ.update(_IDENTITY)
    os.environ["SLUICE_CACHE_DIR"] = str(tmp_path_factory.mktemp("sluice-cache"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

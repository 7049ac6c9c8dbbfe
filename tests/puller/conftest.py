"""Fixtures every puller test module shares: gpg keys (one set per module) and a world."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import gpgkit
from tests.pullerkit import Keys, World, make_keys, world


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    keys = make_keys(tmp_path_factory.mktemp("puller-keys"))
    yield keys
    gpgkit.kill_agent(keys.home)


@pytest.fixture
def w(tmp_path: Path, keys: Keys) -> Iterator[World]:
    with world(tmp_path, keys) as w:
        yield w

"""Render slots: at most N renderer children at work at once, across threads and processes.

Each render's memory is capped (RLIMIT_DATA), but a pod runs several jobs, each with
several render threads: without a shared bound, a PR full of Kustomize "diamonds"
would multiply the cap past the pod's memory limit. A slot is an exclusive ``flock``
on one of N files in a directory, so it is shared by every process that uses the
directory, and the kernel releases it when its holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from bot.config.repo import ConfigError
from bot.render.limits import RenderError

DEFAULT_SLOTS = 2
_POLL_S = 0.02


class RenderSlots:
    def __init__(self, count: int = DEFAULT_SLOTS, directory: Path | None = None) -> None:
        if count < 1:
            raise ConfigError("SLUICE_RENDER_SLOTS: must be at least 1")
        self.count = count
        self.directory = directory or Path(tempfile.gettempdir()) / f"sluice-slots-{os.getuid()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RenderSlots:
        raw = environ.get("SLUICE_RENDER_SLOTS", "").strip()
        if raw and not raw.isdigit():
            raise ConfigError(f"SLUICE_RENDER_SLOTS: must be a whole number, got {raw!r}")
        directory = environ.get("SLUICE_RENDER_SLOTS_DIR", "").strip()
        return cls(int(raw or DEFAULT_SLOTS), Path(directory) if directory else None)

    @contextlib.contextmanager
    def hold(self, deadline: float, subject: str, timeout_s: float) -> Iterator[None]:
        """Hold a slot for the block; a render still waiting at ``deadline`` times out."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            for index in range(self.count):
                fd = os.open(self.directory / f"slot-{index}", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield
                finally:
                    os.close(fd)  # releases the lock
                return
            if time.monotonic() >= deadline:
                raise RenderError(
                    f"{subject}: render timed out after {timeout_s:g}s (waiting for one of "
                    f"{self.count} render slots, SLUICE_RENDER_SLOTS)"
                )
            time.sleep(_POLL_S)

"""A small pool of long-lived Helm worker processes, killed and replaced on overrun.

Starting a worker (Python plus Helm's Go engine) costs about 0.1 s, a render 1–4 ms:
workers are started on demand, reused, and killed with their process group when a
render breaks its wall-clock or CPU deadline or its memory limit. A render that
misbehaves therefore fails alone; the next one gets a fresh worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.render import helm_worker
from bot.render.limits import RenderError, RenderLimits
from bot.render.sandbox import MIB, ChildLimits, Sandbox, go_env, kill_group, offline_env

# What Python and Helm's engine need before any chart is loaded (measured: ~150 MiB of
# writable mappings); the render's own allowance comes on top of it.
WORKER_BASE_MEMORY = 192 * MIB
_TICK_S = 0.05
# The worker refuses output over max_output_bytes (64 MiB by default); JSON escaping can
# at most double it. A longer reply means a worker that is not behaving: it is killed.
MAX_REPLY_BYTES = 256 * MIB
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class WorkerOverrun(Exception):
    """The worker broke a bound or died; it has been killed."""


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    home: str
    memory_bytes: int

    def call(self, request: dict[str, Any], deadline: float, cpu_s: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        cpu_start = self.cpu_s()
        try:
            helm_worker.write_message(self.process.stdin, request)
        except (BrokenPipeError, OSError):
            raise WorkerOverrun(self.death()) from None
        return self.receive(deadline, cpu_start + cpu_s, cpu_s)

    def receive(self, deadline: float, cpu_deadline: float, cpu_s: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks = bytearray()
        size: int | None = None
        while size is None or len(chunks) < size + helm_worker.HEADER.size:
            now = time.monotonic()
            if now >= deadline:
                raise WorkerOverrun("timeout")
            if self.cpu_s() >= cpu_deadline:
                raise WorkerOverrun(f"killed at the {cpu_s:g}s CPU-time limit")
            ready, _, _ = select.select([fd], [], [], min(_TICK_S, deadline - now))
            if not ready:
                continue
            chunk = os.read(fd, 1024 * 1024)
            if not chunk:
                raise WorkerOverrun(self.death())
            chunks += chunk
            if size is None and len(chunks) >= helm_worker.HEADER.size:
                (size,) = helm_worker.HEADER.unpack_from(chunks)
            if size is not None and size > MAX_REPLY_BYTES:
                raise WorkerOverrun("reply over the output limit")
        return json.loads(bytes(chunks[helm_worker.HEADER.size :]))

    def cpu_s(self) -> float:
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def death(self) -> str:
        try:
            code = self.process.wait(1.0)
        except subprocess.TimeoutExpired:
            return "the Helm renderer stopped answering"
        return f"the Helm renderer died (exit {code}): out of memory or a crash"

    def kill(self) -> None:
        kill_group(self.process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5.0)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.home, ignore_errors=True)


class HelmPool:
    """Helm workers shared by the threads of one :class:`~bot.render.engine.RenderEngine`."""

    def __init__(self, sandbox: Sandbox, size: int | None = None) -> None:
        self._sandbox = sandbox
        self._size = max(1, size or os.cpu_count() or 2)
        self._lock = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy = 0
        self._closed = False

    def render(
        self, request: dict[str, Any], *, subject: str, limits: RenderLimits, deadline: float
    ) -> dict[str, Any]:
        """Send one render request; raise :class:`RenderError` on overrun."""
        with self._sandbox.slots.hold(deadline, subject, limits.timeout_s):
            return self._render(request, subject=subject, limits=limits, deadline=deadline)

    def _render(
        self, request: dict[str, Any], *, subject: str, limits: RenderLimits, deadline: float
    ) -> dict[str, Any]:
        worker = self._take(limits, deadline, subject)
        cpu_start = worker.cpu_s()
        try:
            reply = worker.call(request, deadline, limits.cpu_s)
        except WorkerOverrun as exc:
            self._sandbox.charge(max(0.0, worker.cpu_s() - cpu_start))
            worker.kill()
            self._release(None)
            if str(exc) == "timeout":
                raise RenderError(
                    f"{subject}: render timed out after {limits.timeout_s:g}s"
                ) from None
            raise RenderError(f"{subject}: helm render {exc}") from None
        self._sandbox.charge(float(reply.get("cpu_s") or 0.0))
        self._release(worker)
        return reply

    def _take(self, limits: RenderLimits, deadline: float, subject: str) -> _Worker:
        memory = WORKER_BASE_MEMORY + limits.max_memory_bytes
        with self._lock:
            while not self._idle and self._busy >= self._size and not self._closed:
                if not self._lock.wait(max(0.0, deadline - time.monotonic())):
                    raise RenderError(f"{subject}: render timed out after {limits.timeout_s:g}s")
            if self._closed:
                raise RenderError(f"{subject}: the render engine was closed")
            self._busy += 1
            worker = self._idle.pop() if self._idle else None
        if worker is not None and worker.memory_bytes == memory:
            return worker
        if worker is not None:
            worker.kill()
        try:
            return self._start(memory, deadline)
        except (OSError, WorkerOverrun) as exc:
            self._release(None)
            raise RenderError(f"{subject}: cannot start the Helm renderer ({exc})") from None

    def _release(self, worker: _Worker | None) -> None:
        with self._lock:
            self._busy -= 1
            if worker is not None and not self._closed:
                self._idle.append(worker)
                worker = None
            self._lock.notify()
        if worker is not None:
            worker.kill()

    def _start(self, memory: int, deadline: float) -> _Worker:
        home = tempfile.mkdtemp(prefix="sluice-helm-")
        env = offline_env(home, go_env(memory - WORKER_BASE_MEMORY))
        process = self._sandbox.popen(
            [sys.executable, "-s", "-S", helm_worker.__file__],
            env={**env, "PYTHONPATH": _site_packages()},
            cwd=home,
            limits=ChildLimits(memory_bytes=memory, cpu_s=None, wall_s=0),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        worker = _Worker(process, home, memory)
        try:
            worker.receive(max(deadline, time.monotonic() + 10.0), float("inf"), 0)
        except WorkerOverrun:
            worker.kill()
            raise
        return worker

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._lock.notify_all()
        for worker in idle:
            worker.kill()


def _site_packages() -> str:
    """Where helm_python is installed: the worker runs without site (-S) but needs it."""
    import importlib.util

    spec = importlib.util.find_spec("helm_python")
    if spec is None or spec.origin is None:
        raise RenderError("helm-python-sdk is not installed")
    return str(Path(spec.origin).parent.parent)

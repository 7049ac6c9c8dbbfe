"""A long-lived engine worker subprocess with per-request timeouts.

The embedded Rego engines can panic (regorus), hang (regopy on some inputs) or
crash (regopy when shared across threads).  Each engine therefore lives in its own
child process (:mod:`bot.policy.worker`); a request that times out or finds the
child dead kills it, and the next request starts a fresh one.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

WORKER_SCRIPT = Path(__file__).with_name("worker.py")


class WorkerError(Exception):
    """The worker timed out, crashed or broke the protocol (it has been stopped)."""


class WorkerProcess:
    """One engine worker; ``setup`` is replayed to every fresh process."""

    def __init__(self, setup: dict[str, Any], timeout_s: float) -> None:
        self._setup = setup
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._setup_reply: dict[str, Any] = {}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def setup_reply(self) -> dict[str, Any]:
        """The worker's reply to ``setup`` (starting the worker if needed)."""
        with self._lock:
            self._ensure_started()
            return self._setup_reply

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._ensure_started()
            return self._exchange(message)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._stop()
        env = dict(os.environ, RUST_BACKTRACE="0")
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._buffer = b""
        os.set_blocking(self._proc.stdin.fileno(), False)  # type: ignore[union-attr]
        os.set_blocking(self._proc.stdout.fileno(), False)  # type: ignore[union-attr]
        self._setup_reply = self._exchange(self._setup)

    def _exchange(self, message: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self._timeout_s
        payload = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            self._write(payload, deadline)
            line = self._read_line(deadline)
        except TimeoutError:
            self._stop()
            raise WorkerError(
                f"policy engine timed out after {self._timeout_s:g}s (engine restarted)"
            ) from None
        except (BrokenPipeError, EOFError):
            detail = self._crash_detail()
            self._stop()
            raise WorkerError(f"policy engine crashed ({detail}; engine restarted)") from None
        try:
            return json.loads(line)
        except ValueError:
            self._stop()
            raise WorkerError("policy engine sent a malformed reply (engine restarted)") from None

    def _write(self, payload: bytes, deadline: float) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        fd = self._proc.stdin.fileno()
        view = memoryview(payload)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_WRITE)
            while view:
                if not sel.select(_remaining(deadline)):
                    raise TimeoutError
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    continue

    def _read_line(self, deadline: float) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        chunks = [self._buffer]
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in chunks[-1]:
                if not sel.select(_remaining(deadline)):
                    raise TimeoutError
                try:
                    chunk = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise EOFError
                chunks.append(chunk)
        data = b"".join(chunks)
        line, _, self._buffer = data.partition(b"\n")
        return line

    def _crash_detail(self) -> str:
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "stopped responding"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())

"""Run a renderer as a confined child process: memory, CPU and wall-clock bounds, no network.

Every child gets its own process group (killed whole at the deadline), resource
limits set between fork and exec, an environment with no credentials and every
proxy variable pointing at a closed local port, and, where the kernel lets an
unprivileged process do it, a network namespace of its own (only a loopback
interface that is down: no connection can be opened at all, not even to
127.0.0.1, which Go's HTTP client never sends through a proxy).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.render.limits import RenderError, RenderLimits
from bot.render.slots import RenderSlots

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Go reserves (PROT_NONE) about 800 MiB of address space at start-up (kubectl; Python with
# Helm's engine loaded: 1.8 GiB), and more as its heap grows; RLIMIT_AS must
# leave room for it, so the real bound on what a child can use is RLIMIT_DATA.
ADDRESS_SPACE_HEADROOM = 2048 * MIB
# Nothing listens on the discard port; a proxied connection is refused at once.
CLOSED_PROXY = "http://127.0.0.1:9"

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_MODES = {
    "netns": _CLONE_NEWNET,
    "userns+netns": _CLONE_NEWUSER | _CLONE_NEWNET,
}
_UNSHARE_ARGS = {"netns": ("--net",), "userns+netns": ("--user", "--net")}
_SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
PROXY_ONLY = "proxy-only"
WALL_CLOCK = "killed at the wall-clock deadline"


@dataclass(frozen=True)
class ChildLimits:
    """Bounds for one child process."""

    memory_bytes: int
    cpu_s: float | None
    wall_s: float
    max_output_bytes: int = 64 * MIB


@dataclass(frozen=True)
class ChildResult:
    returncode: int
    stdout: bytes
    stderr: bytes
    cpu_s: float
    # Why the sandbox stopped the child, or None when it exited on its own.
    killed: str | None = None


def offline_env(home: str | os.PathLike[str], extra: Mapping[str, str] | None = None) -> dict:
    """An environment with no credentials, no usable proxy and no git transport."""
    home = str(home)
    env = {
        "HOME": home,
        "KUBECONFIG": os.path.join(home, "kubeconfig"),
        "PATH": home,  # no other program to run (no git, no helm, no shell)
        "TMPDIR": home,
        "XDG_CONFIG_HOME": home,
        "XDG_CACHE_HOME": home,
        "LC_ALL": "C",
        "GIT_ALLOW_PROTOCOL": "",
        "GIT_CONFIG_NOSYSTEM": "1",
        "KUSTOMIZE_PLUGIN_HOME": home,
        "NO_PROXY": "",
        "no_proxy": "",
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "FTP_PROXY"):
        env[name] = env[name.lower()] = CLOSED_PROXY
    env.update(extra or {})
    return env


class Sandbox:
    """Starts confined children. Probes once which network isolation the kernel allows."""

    def __init__(self, isolation: str | None = None, slots: RenderSlots | None = None) -> None:
        self.slots = slots or RenderSlots.from_env(os.environ)
        self._lock = threading.Lock()
        self._isolation = isolation
        self._cpu_used_s = 0.0
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._prlimit = shutil.which("prlimit", path=_SYSTEM_PATH)
        self._unshare = shutil.which("unshare", path=_SYSTEM_PATH)

    @property
    def cpu_used_s(self) -> float:
        """CPU seconds used by every child this sandbox ran (renders' share of a budget)."""
        with self._lock:
            return self._cpu_used_s

    def charge(self, cpu_s: float) -> None:
        with self._lock:
            self._cpu_used_s += cpu_s

    @property
    def isolation(self) -> str:
        """``netns``, ``userns+netns`` or ``proxy-only`` (no namespace could be made)."""
        with self._lock:
            if self._isolation is None:
                self._isolation = detect_isolation()
            return self._isolation

    def probe(self) -> str:
        """The first isolation mode this host lets a child start in."""
        true = shutil.which("true", path=_SYSTEM_PATH) or "true"
        for mode in _MODES:
            quiet = subprocess.DEVNULL
            try:
                child = self._spawn([true], None, mode, {}, "/", quiet, quiet, quiet)
                if child.wait(10) == 0:
                    return mode
            except (subprocess.SubprocessError, OSError):
                continue
        return PROXY_ONLY

    def _rlimits(self, limits: ChildLimits | None) -> list[tuple[str, int, int, int]]:
        """(prlimit option, resource, soft, hard) for ``limits``."""
        if limits is None:
            return []
        data = limits.memory_bytes
        out = [
            ("data", resource.RLIMIT_DATA, data, data),
            (
                "as",
                resource.RLIMIT_AS,
                data + ADDRESS_SPACE_HEADROOM,
                data + ADDRESS_SPACE_HEADROOM,
            ),
            (
                "fsize",
                resource.RLIMIT_FSIZE,
                limits.max_output_bytes + 1,
                limits.max_output_bytes + 1,
            ),
            ("core", resource.RLIMIT_CORE, 0, 0),
        ]
        if limits.cpu_s is not None:
            soft = max(1, math.ceil(limits.cpu_s))
            # SIGXCPU at the soft limit (Go ignores it), SIGKILL a second later.
            out.append(("cpu", resource.RLIMIT_CPU, soft, soft + 1))
        return out

    def _spawn(
        self,
        command: Sequence[str],
        limits: ChildLimits | None,
        mode: str,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str],
        stdin: int | None,
        stdout: int | None,
        stderr: int | None,
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` under ``limits`` in network ``mode``, in its own session.

        With util-linux's ``prlimit`` and ``unshare`` the limits and namespaces are
        applied by a short exec chain, so Python can start the child with vfork; without
        them, between fork and exec (slower: the whole parent is forked).
        """
        rlimits = self._rlimits(limits)
        preexec: Callable[[], None] | None = None
        if self._prlimit and (mode == PROXY_ONLY or self._unshare):
            prefix = [self._prlimit, *(f"--{o}={s}:{h}" for o, _, s, h in rlimits), "--"]
            if mode != PROXY_ONLY:
                prefix += [self._unshare, *_UNSHARE_ARGS[mode], "--"]
            command = [*prefix, *command] if rlimits or mode != PROXY_ONLY else list(command)
        else:
            preexec = self._preexec(rlimits, _MODES.get(mode, 0))
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=preexec,
            close_fds=True,
        )

    def _preexec(self, rlimits: list[tuple[str, int, int, int]], flags: int) -> Callable[[], None]:
        unshare = self._libc.unshare

        def preexec() -> None:
            for _, which, soft, hard in rlimits:
                resource.setrlimit(which, (soft, hard))
            if flags and unshare(flags) != 0:
                raise OSError(ctypes.get_errno(), "unshare failed")

        return preexec

    def popen(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str],
        limits: ChildLimits | None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` confined, in a new session (its own process group)."""
        return self._spawn(command, limits, self.isolation, env, cwd, stdin, stdout, stderr)

    def run(
        self,
        command: Sequence[str],
        *,
        limits: ChildLimits,
        env_extra: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> ChildResult:
        """Run ``command`` to completion or to its deadline, in an empty temporary HOME.

        Output goes to files (bounded by RLIMIT_FSIZE), never to unbounded pipes.
        """
        with tempfile.TemporaryDirectory(prefix="sluice-sandbox-") as home:
            out_path, err_path = Path(home, ".stdout"), Path(home, ".stderr")
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = self.popen(
                    command,
                    env=offline_env(home, env_extra),
                    cwd=cwd or home,
                    limits=limits,
                    stdout=out,
                    stderr=err,
                )
                status, cpu_s, killed = _wait(proc, limits)
                self.charge(cpu_s)
            stdout = _read_capped(out_path, limits.max_output_bytes)
            stderr = _read_capped(err_path, 64 * 1024)
        if killed is None:
            killed = _limit_hit(status, cpu_s, limits)
        return ChildResult(status, stdout, stderr, cpu_s, killed)


@functools.cache
def detect_isolation() -> str:
    """What the kernel allows this process: a fact of the host, probed and logged once."""
    mode = Sandbox(isolation=PROXY_ONLY, slots=RenderSlots(1)).probe()
    if mode == PROXY_ONLY:
        log.warning(
            "render sandbox: no network namespace available (not root and user namespaces "
            "disabled); renders are offline by proxy settings only. Keep an egress "
            "NetworkPolicy on the pod."
        )
    else:
        log.info("render sandbox: network isolation by %s", mode)
    return mode


def kill_group(pid: int) -> None:
    """SIGKILL the whole process group led by ``pid`` (a renderer and anything it started)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError as exc:  # the group is gone and its id reused
        if exc.errno != errno.EPERM:
            raise


def _wait(proc: subprocess.Popen[bytes], limits: ChildLimits) -> tuple[int, float, str | None]:
    killed: list[str] = []

    def at_deadline() -> None:
        killed.append(WALL_CLOCK)
        kill_group(proc.pid)

    timer = threading.Timer(limits.wall_s, at_deadline)
    timer.daemon = True
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        kill_group(proc.pid)  # anything the child left behind in its group
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, (killed[0] if killed else None)


def _limit_hit(returncode: int, cpu_s: float, limits: ChildLimits) -> str | None:
    cpu_limit = math.inf if limits.cpu_s is None else max(1, math.ceil(limits.cpu_s))
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL) and cpu_s >= cpu_limit - 0.05:
        return f"killed at the {limits.cpu_s:g}s CPU-time limit"
    if returncode == -signal.SIGXFSZ:
        return f"output over the {limits.max_output_bytes}-byte limit"
    return None


def _read_capped(path: Path, cap: int) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(cap + 1)


def memory_error(stderr: bytes) -> bool:
    """Whether a child's stderr says it ran out of memory (Go runtime or Python).

    Go puts its fatal error first and a long goroutine dump after it; Python puts
    ``MemoryError`` last: look at both ends."""
    text = stderr[:4096] + b"\n" + stderr[-4096:]
    return (
        b"out of memory" in text
        or b"cannot allocate memory" in text
        or b"MemoryError" in text
        or b"failed to reserve" in text
    )


def go_env(memory_bytes: int) -> dict[str, str]:
    """Go's collector off for speed; GOMEMLIMIT brings it back well below RLIMIT_DATA."""
    return {"GOGC": "off", "GOMEMLIMIT": f"{memory_bytes * 3 // 4 // MIB}MiB"}


def run(
    command: Sequence[str],
    *,
    subject: str,
    limits: RenderLimits,
    deadline: float,
    sandbox: Sandbox | None = None,
    env_extra: Mapping[str, str] | None = None,
) -> ChildResult:
    """Run a renderer command confined; a breached limit is a :class:`RenderError`.

    ``subject`` names the app in messages. A non-zero exit is returned, not raised:
    the caller knows how to explain its renderer's errors.
    """
    box = sandbox or Sandbox()
    with box.slots.hold(deadline, subject, limits.timeout_s):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RenderError(f"{subject}: render timed out after {limits.timeout_s:g}s")
        child = ChildLimits(
            memory_bytes=limits.max_memory_bytes,
            cpu_s=limits.cpu_s,
            wall_s=remaining,
            max_output_bytes=limits.max_output_bytes,
        )
        env = {**go_env(limits.max_memory_bytes), **(env_extra or {})}
        result = box.run(command, limits=child, env_extra=env)
    if result.killed == WALL_CLOCK:
        raise RenderError(f"{subject}: render timed out after {limits.timeout_s:g}s")
    if result.killed is not None:
        raise RenderError(f"{subject}: render {result.killed}")
    if result.returncode != 0 and memory_error(result.stderr):
        raise RenderError(f"{subject}: render {memory_message(limits)}")
    return result


def memory_message(limits: RenderLimits) -> str:
    return f"ran out of memory (limit {limits.max_memory_bytes // MIB} MiB, max_memory_bytes)"

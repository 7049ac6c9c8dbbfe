#!/usr/bin/env python3
"""The hostile-corpus benchmark: each attack from issue 7, run for real, with its cost.

Every render attack is a branch of one GitOps repository, previewed by ``sluice preview``
exactly as a ``sluice serve`` job would (same engine, same sandbox, the shipped limits
unless overridden). The intake attacks run against a real ``sluice serve``. For each it
prints the wall time, the peak RSS of the whole process tree (summed over every process:
renderer children included, shared pages counted twice, so it over-states) and what the
user sees. The last line compares the worst peak, plus the serving processes' own
footprint, with the pod memory limit shipped in deploy/base/deployment.yaml.

Usage: python bench/hostile.py [--timeout SECONDS]   (default: the shipped render limits)
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value}\n"
CHART = "apiVersion: v2\nname: {name}\nversion: 1.0.0\n"
SECRET = "hostile-bench-hook-secret"


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com"}
    env |= {"GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.com"}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


# -- the corpus -------------------------------------------------------------------------------


def _apps(*entries: str) -> str:
    return "apps:\n" + "".join(f"- {entry}\n" for entry in entries)


BASE_APPS = ["{name: ok, path: apps/ok}", "{name: big, path: apps/big}"]


def _diamond(repo: Path, top: str, levels: int, value_bytes: int) -> None:
    write(repo, f"{top}/l0/kustomization.yaml", "resources: [cm.yaml]\n")
    write(repo, f"{top}/l0/cm.yaml", CM.format(name="cm", value="x" * value_bytes))
    for level in range(1, levels + 1):
        for side in ("a", "b"):
            write(
                repo,
                f"{top}/l{level}/{side}/kustomization.yaml",
                f"namePrefix: {side}-\nresources: [../../l{level - 1}]\n",
            )
        write(repo, f"{top}/l{level}/kustomization.yaml", "resources: [a, b]\n")


def _deep(repo: Path) -> list[str]:
    head = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata:\n"
    block = "".join(" " * (i + 1) + "k:\n" for i in range(900)) + " " * 901 + "v\n"
    write(repo, "attack/deep-yaml/cm.yaml", head + block)
    write(repo, "attack/deep-json/cm.json", '{"a":' * 100_000 + "1" + "}" * 100_000)
    write(repo, "attack/deep-kust/kustomization.yaml", "resources: [cm.yaml]\n")
    write(repo, "attack/deep-kust/cm.yaml", head + "  x: " + "[" * 500 + "]" * 500 + "\n")
    write(repo, "attack/deep-helm/Chart.yaml", CHART.format(name="deep"))
    write(
        repo,
        "attack/deep-helm/templates/cm.yaml",
        head + '  x: {{ repeat 500 "[" }}{{ repeat 500 "]" }}\n',
    )
    return [f"{{name: deep-{k}, path: attack/deep-{k}}}" for k in ("yaml", "json", "kust", "helm")]


def _diamonds(repo: Path) -> list[str]:
    _diamond(repo, "attack/diamond1", 16, 65536)
    _diamond(repo, "attack/diamond2", 16, 65536)
    return [
        "{name: diamond1, path: attack/diamond1/l16}",
        "{name: diamond2, path: attack/diamond2/l16}",
    ]


def _helm_loop(repo: Path) -> list[str]:
    write(repo, "attack/loop/Chart.yaml", CHART.format(name="loop"))
    write(
        repo,
        "attack/loop/templates/loop.yaml",
        "{{- range $i := until 100000 }}{{- range $j := until 100000 }}{{- end }}{{- end }}\n",
    )
    return ["{name: loop, path: attack/loop}"]


def _helm_memory(repo: Path) -> list[str]:
    write(repo, "attack/hog/Chart.yaml", CHART.format(name="hog"))
    write(repo, "attack/hog/templates/hog.yaml", "{{- $s := until 2000000000 }}\n")
    return ["{name: hog, path: attack/hog}"]


def _huge_diff(repo: Path) -> list[str]:
    lines = "".join(f"    line {i} rewritten\n" for i in range(40_000))
    write(repo, "apps/big/cm.yaml", CM.format(name="big", value="|\n" + lines))
    return []


def _glob(repo: Path) -> list[str]:
    path = "/".join(["a" * 30] * 8)[:240]
    write(repo, path, "x\n")
    pattern = "**/a**/a**/a**/a**/a**/a**/a**/a**/b"
    return [f"{{name: globbed, path: apps/ok, watch: ['{pattern}']}}"]


def _many_apps(repo: Path) -> list[str]:
    return [f"{{name: many{i}, path: apps/ok}}" for i in range(10_000)]


def _remote(repo: Path, url: str) -> list[str]:
    # A case variant of `resources`: Kustomize reads it; the confinement check must too.
    write(repo, "attack/remote/kustomization.yaml", f"Resources:\n- {url}/stolen.yaml\n")
    return ["{name: remote, path: attack/remote}"]


def build(repo: Path, url: str) -> list[str]:
    """The base branch and one branch per attack; returns the attack names."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write(repo, ".sluice.yaml", _apps(*BASE_APPS))
    write(repo, "apps/ok/kustomization.yaml", "resources: [cm.yaml]\n")
    write(repo, "apps/ok/cm.yaml", CM.format(name="ok", value="v"))
    lines = "".join(f"    line {i}\n" for i in range(40_000))
    write(repo, "apps/big/cm.yaml", CM.format(name="big", value="|\n" + lines))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    attacks: dict[str, Callable[[Path], list[str]]] = {
        "deep-nesting": _deep,
        "kustomize-diamond": _diamonds,
        "helm-loop": _helm_loop,
        "helm-memory": _helm_memory,
        "huge-diff": _huge_diff,
        "glob": _glob,
        "10k-apps": _many_apps,
        "remote-resource": lambda r: _remote(r, url),
    }
    for name, make in attacks.items():
        git(repo, "checkout", "-q", "-b", name, "main")
        extra = make(repo)
        write(repo, ".sluice.yaml", _apps(*BASE_APPS, *extra))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "--allow-empty", "-m", name)
    git(repo, "checkout", "-q", "main")
    return list(attacks)


# -- measuring -------------------------------------------------------------------------------


def _tree_rss_kib(root: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        ppid = int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))
        found = re.search(r"^VmRSS:\s+(\d+)", status, re.M)
        rss[int(entry)] = int(found.group(1)) if found else 0
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


class PeakSampler:
    """Samples the RSS of a process tree every 20 ms; ``peak_mib`` is the largest sum."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self.peak_kib = _tree_rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kib = max(self.peak_kib, _tree_rss_kib(self.pid))

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


def _outcome(stdout: str) -> str:
    try:
        report = json.loads(stdout)
    except ValueError:
        return "no JSON report: " + stdout[-200:]
    broken = [a for a in report["apps"] if a["status"] == "error"]
    errors = report.get("errors") or []
    first = (broken[0]["error"] if broken else "") or ""
    changes = [c for a in report["apps"] for c in a["changes"]]
    summary = next((c["diff"].splitlines()[2] for c in changes if "too large" in c["diff"]), "")
    text = f"verdict {report['verdict']}, {len(broken)} app errors"
    if errors:
        text += f"; {errors[0][:90]}"
    return f"{text}; {(summary or first)[:110]}"


def preview_attack(repo: Path, name: str, env: dict[str, str]) -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory() as cache:
        command = [str(VENV_BIN / "sluice"), "preview", "--repo", str(repo), "--base", "main"]
        command += ["--head", name, "--format", "json"]
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            env={**env, "SLUICE_CACHE_DIR": cache},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with PeakSampler(proc.pid) as sampler:
            stdout, _ = proc.communicate(timeout=600)
        return time.monotonic() - started, sampler.peak_mib, _outcome(stdout)


# -- intake attacks against a real `sluice serve` --------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _signed(body: bytes) -> dict:
    from bot.forge.webhooks import github_signature

    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": f"bench-{time.monotonic_ns()}",
        "X-Hub-Signature-256": github_signature(SECRET, body),
    }
    return {"data": body, "headers": headers}


def intake_attacks(workdir: Path) -> list[tuple[str, float, float, str]]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir / "home"),
        "SLUICE_DATA_DIR": str(workdir / "data"),
        "SLUICE_GITHUB_WEBHOOK_SECRET": SECRET,
        "SLUICE_GITHUB_TOKEN": "bench-token",
        "SLUICE_GITHUB_API_URL": "http://127.0.0.1:9",
    }
    log = (workdir / "serve.log").open("w")
    serve = subprocess.Popen(
        [str(VENV_BIN / "sluice"), "serve", "--bind", f"127.0.0.1:{port}"],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    rows = []
    try:
        for _ in range(300):
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        with PeakSampler(serve.pid) as idle:
            time.sleep(1.0)
        rows.append(("serve, idle", 0.0, idle.peak_mib, "baseline of the serving processes"))
        with PeakSampler(serve.pid) as sampler:
            started = time.monotonic()
            held = []
            for index in range(100):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if index % 2:
                    sock.sendall(
                        b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 100000\r\n\r\n{"
                    )
                held.append(sock)
            time.sleep(1.0)
            probe = time.monotonic()
            status = requests.get(f"{url}/healthz", timeout=3).status_code
            latency = time.monotonic() - probe
            for sock in held:
                sock.close()
        rows.append(
            (
                "50 idle + 50 slow-body clients",
                time.monotonic() - started,
                sampler.peak_mib,
                f"/healthz {status} in {latency * 1000:.0f} ms",
            )
        )
        for label, body in (
            ("5,000-digit number (signed)", b'{"action": "opened", "n": ' + b"9" * 5000 + b"}"),
            ("100k-deep JSON (signed)", b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ):
            with PeakSampler(serve.pid) as sampler:
                started = time.monotonic()
                answer = requests.post(f"{url}/webhooks/github", timeout=10, **_signed(body))
            rows.append(
                (
                    label,
                    time.monotonic() - started,
                    sampler.peak_mib,
                    f"{answer.status_code} {answer.text.strip()[:80]}",
                )
            )
    finally:
        serve.terminate()
        try:
            serve.wait(40)
        except subprocess.TimeoutExpired:
            serve.kill()
        log.close()
    return rows


def pod_limit_mib() -> float:
    text = (ROOT / "deploy/base/deployment.yaml").read_text()
    found = re.search(r"limits: \{[^}]*memory: (\d+)(Mi|Gi)", text)
    assert found, "no memory limit in deploy/base/deployment.yaml"
    return float(found.group(1)) * (1024 if found.group(2) == "Gi" else 1)


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(CM.format(name="stolen", value="from-the-network").encode())

    def log_message(self, *_args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, help="SLUICE_RENDER_TIMEOUT_S for the renders")
    parser.add_argument("--only", nargs="*", help="run only these render attacks")
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    if args.timeout:
        env["SLUICE_RENDER_TIMEOUT_S"] = str(args.timeout)
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "repo"
        attacks = build(repo, f"http://127.0.0.1:{server.server_address[1]}")
        for name in [a for a in attacks if not args.only or a in args.only]:
            wall, peak, outcome = preview_attack(repo, name, env)
            if name == "remote-resource":
                outcome += f"; requests that reached the server: {len(_Recorder.hits)}"
            rows.append((name, wall, peak, outcome))
            print(f"{name:<32} {wall:7.2f} s {peak:8.0f} MiB  {outcome}", flush=True)
        intake = intake_attacks(work)
        for row in intake:
            print(f"{row[0]:<32} {row[1]:7.2f} s {row[2]:8.0f} MiB  {row[3]}", flush=True)
    server.shutdown()
    limit = pod_limit_mib()
    idle = next(r[2] for r in intake if r[0] == "serve, idle")
    # A render attack runs inside the serve's job process: add the serving processes.
    worst_render = max((r[2] for r in rows), default=0.0) + idle
    worst_intake = max(r[2] for r in intake)
    total = max(worst_render, worst_intake)
    verdict = "within" if total < limit else "OVER"
    print(
        f"worst case: renders {worst_render:.0f} MiB (peak + serve idle {idle:.0f} MiB), "
        f"intake {worst_intake:.0f} MiB: {verdict} the pod limit of {limit:.0f} MiB"
    )
    return 0 if total < limit else 1


if __name__ == "__main__":
    sys.exit(main())

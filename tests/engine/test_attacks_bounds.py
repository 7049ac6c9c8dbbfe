"""Hostile pull requests against the render, diff and glob bounds, each attack tried for real.

Real ``kubectl kustomize``, Helm's real engine in its worker processes, a real HTTP server
on this host that a render must never reach.
"""

from __future__ import annotations

import difflib
import http.server
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import ConfigError, parse_repo_config
from bot.diff import diff_objects
from bot.diff.objects import to_yaml
from bot.models import App
from bot.preview import PreviewOptions, run_preview
from bot.render import RenderEngine, RenderLimits, affected_apps, render_apps
from bot.render.globs import Glob
from bot.render.kustomize import find_kubectl, run_kustomize
from bot.render.limits import PreviewBudget
from bot.render.sandbox import PROXY_ONLY, ChildLimits, Sandbox, memory_error
from bot.render.slots import RenderSlots
from bot.render.tree import ExportTree

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value}\n"
CHART = "apiVersion: v2\nname: {name}\nversion: 1.0.0\n"
# A renderer's PATH is empty: tools are named by absolute path.
ENV, LS, SLEEP = (shutil.which(tool) or f"/bin/{tool}" for tool in ("env", "ls", "sleep"))


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.hits.append(self.path)
        body = CM.format(name="fetched", value="from-the-network").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def _serve(host: str) -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    handler = type("Handler", (_Recorder,), {"hits": hits})
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, list[str]]]:
    yield from _serve("127.0.0.1")


def _host_address() -> str | None:
    """A non-loopback address of this host (Go proxies those, unlike 127.0.0.1)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
    except OSError:
        return None
    candidates = [a for a in out.split() if "." in a and not a.startswith("127.")]
    return candidates[0] if candidates else None


def _remote_kustomization(root: Path, url: str) -> ExportTree:
    write(root, "apps/evil/kustomization.yaml", f"resources:\n- {url}/stolen.yaml\n")
    return ExportTree(root)


def test_the_server_really_answers_without_the_sandbox(
    tmp_path: Path, loopback_server: tuple[str, list[str]]
) -> None:
    """Control: the same kubectl, unconfined, does fetch the URL (so the next tests mean it)."""
    url, hits = loopback_server
    _remote_kustomization(tmp_path, url)
    proc = subprocess.run(
        [find_kubectl(), "kustomize", str(tmp_path / "apps/evil")],
        capture_output=True,
        env={"HOME": str(tmp_path), "PATH": "/nonexistent"},
        timeout=60,
    )
    assert hits == ["/stolen.yaml"], proc.stderr.decode()


def test_render_cannot_reach_the_network_even_with_the_checks_bypassed(
    tmp_path: Path, loopback_server: tuple[str, list[str]]
) -> None:
    url, hits = loopback_server
    tree = _remote_kustomization(tmp_path, url)
    sandbox = Sandbox()
    print(f"network isolation in force: {sandbox.isolation}")
    if sandbox.isolation == PROXY_ONLY:
        pytest.skip("no network namespace here; Go never proxies 127.0.0.1 (see the next test)")
    # run_kustomize directly: the static walk that refuses remote resources is skipped.
    with pytest.raises(Exception, match="kustomize failed"):
        run_kustomize(
            find_kubectl(),
            tree,
            "apps/evil",
            RenderLimits(),
            time.monotonic() + 60,
            sandbox=sandbox,
        )
    assert hits == []


def test_proxy_only_fallback_still_blocks_a_remote_resource(tmp_path: Path) -> None:
    """Without namespaces (a non-root pod), the closed-port proxies are what stop kubectl."""
    host = _host_address()
    if host is None:
        pytest.skip("this host has no non-loopback address to serve from")
    server = _serve(host)
    url, hits = next(server)
    try:
        tree = _remote_kustomization(tmp_path, url)
        with pytest.raises(Exception, match="kustomize failed"):
            run_kustomize(
                find_kubectl(),
                tree,
                "apps/evil",
                RenderLimits(),
                time.monotonic() + 60,
                sandbox=Sandbox(isolation=PROXY_ONLY),
            )
        assert hits == []
    finally:
        server.close()


def _loop_chart(root: Path, name: str) -> App:
    write(root, f"charts/{name}/Chart.yaml", CHART.format(name=name))
    write(
        root,
        f"charts/{name}/templates/loop.yaml",
        "{{- range $i := until 100000 }}{{- range $j := until 100000 }}{{- end }}{{- end }}\n"
        + CM.format(name="never", value="v"),
    )
    return App(name=name, path=f"charts/{name}")


def _good_chart(root: Path) -> App:
    write(root, "charts/good/Chart.yaml", CHART.format(name="good"))
    write(root, "charts/good/templates/cm.yaml", CM.format(name="{{ .Release.Name }}", value="v"))
    return App(name="good", path="charts/good")


def _helm_workers() -> set[int]:
    """Pids of this test process's Helm worker children."""
    out = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(os.getpid())], capture_output=True, text=True
    ).stdout
    return {int(line.split()[0]) for line in out.splitlines() if "helm_worker" in line}


def test_helm_endless_loop_is_killed_at_the_deadline_and_fails_alone(tmp_path: Path) -> None:
    loop = _loop_chart(tmp_path, "loop")
    good = _good_chart(tmp_path)
    with RenderEngine() as engine:
        started = time.monotonic()
        results = render_apps(
            [loop, good], tmp_path, limits=RenderLimits(timeout_s=2), workers=2, engine=engine
        )
        elapsed = time.monotonic() - started
        assert results[0].error == "charts/loop: render timed out after 2s"
        assert results[1].error is None
        assert [o["metadata"]["name"] for o in results[1].objects] == ["good"]
        assert elapsed < 5, elapsed
        # The looping worker is gone (killed), not left burning a core.
        time.sleep(0.2)
        busy = [pid for pid in _helm_workers() if _cpu_busy(pid)]
        assert busy == []
        # The engine still renders Helm afterwards, with a fresh worker.
        again = engine.render(good, tmp_path)
        assert again.error is None


def _cpu_busy(pid: int) -> bool:
    def ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    try:
        before = ticks()
        time.sleep(0.3)
        return ticks() - before > 10
    except OSError:
        return False


def test_helm_cpu_limit_kills_a_loop_before_the_wall_clock(tmp_path: Path) -> None:
    loop = _loop_chart(tmp_path, "spin")
    started = time.monotonic()
    [result] = render_apps([loop], tmp_path, limits=RenderLimits(timeout_s=30, cpu_s=1))
    assert result.error == "charts/spin: helm render killed at the 1s CPU-time limit"
    assert time.monotonic() - started < 10


def test_helm_memory_bomb_is_killed_by_the_memory_limit(tmp_path: Path) -> None:
    write(tmp_path, "charts/big/Chart.yaml", CHART.format(name="big"))
    write(
        tmp_path,
        "charts/big/templates/big.yaml",
        "{{- $s := until 2000000000 }}\n" + CM.format(name="big", value="v"),
    )
    [result] = render_apps(
        [App(name="big", path="charts/big")],
        tmp_path,
        limits=RenderLimits(max_memory_bytes=256 * 1024 * 1024),
    )
    assert result.error is not None
    assert "out of memory" in result.error, result.error


def test_kustomize_diamond_is_stopped_by_the_memory_limit(tmp_path: Path) -> None:
    """Each level includes the one below twice: 2^16 copies of a 64 KiB ConfigMap."""
    write(tmp_path, "apps/d/l0/kustomization.yaml", "resources: [cm.yaml]\n")
    write(tmp_path, "apps/d/l0/cm.yaml", CM.format(name="cm", value="x" * 65536))
    levels = 16
    for level in range(1, levels + 1):
        for side in ("a", "b"):
            write(
                tmp_path,
                f"apps/d/l{level}/{side}/kustomization.yaml",
                f"namePrefix: {side}-\nresources: [../../l{level - 1}]\n",
            )
        write(tmp_path, f"apps/d/l{level}/kustomization.yaml", "resources: [a, b]\n")
    app = App(name="diamond", path=f"apps/d/l{levels}")
    started = time.monotonic()
    [result] = render_apps(
        [app], tmp_path, limits=RenderLimits(max_memory_bytes=256 * 1024 * 1024, timeout_s=60)
    )
    assert result.error is not None
    assert "out of memory" in result.error or "over the" in result.error, result.error
    assert time.monotonic() - started < 60


def test_out_of_memory_is_recognised_before_a_long_goroutine_dump() -> None:
    """Go prints its fatal error first, then every goroutine's stack."""
    dump = b"goroutine 1 [running]:\nruntime.throw(...)\n" * 2000
    assert memory_error(b"fatal error: runtime: cannot allocate memory\n" + dump)
    assert memory_error(b"Traceback ...\n" + dump + b"MemoryError\n")
    assert not memory_error(b"Error: accumulating resources: no such file\n" + dump)


def test_kustomize_render_is_killed_at_the_wall_clock(tmp_path: Path) -> None:
    write(tmp_path, "apps/d/l0/kustomization.yaml", "resources: [cm.yaml]\n")
    write(tmp_path, "apps/d/l0/cm.yaml", CM.format(name="cm", value="x"))
    for level in range(1, 15):
        for side in ("a", "b"):
            write(
                tmp_path,
                f"apps/d/l{level}/{side}/kustomization.yaml",
                f"namePrefix: {side}-\nresources: [../../l{level - 1}]\n",
            )
        write(tmp_path, f"apps/d/l{level}/kustomization.yaml", "resources: [a, b]\n")
    started = time.monotonic()
    [result] = render_apps(
        [App(name="slow", path="apps/d/l14")], tmp_path, limits=RenderLimits(timeout_s=0.5)
    )
    assert result.error == "apps/d/l14: render timed out after 0.5s"
    assert time.monotonic() - started < 3


def test_sandbox_reports_its_isolation_mode() -> None:
    sandbox = Sandbox()
    assert sandbox.isolation in ("netns", "userns+netns", PROXY_ONLY)
    if os.geteuid() == 0:
        assert sandbox.isolation == "netns"
    print(f"python {sys.version_info[:2]}, isolation {sandbox.isolation}, {socket.gethostname()}")


# -- globs ---------------------------------------------------------------------------------


def _reference_regex(pattern: str) -> re.Pattern[str]:
    """The backtracking translation Sluice used before: the semantics to keep."""
    pattern = pattern.strip("/")
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[" and pattern.find("]", i + 2) > 0:
            end = pattern.find("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile("".join(out))


def test_nested_globstar_against_a_long_path_returns_at_once() -> None:
    pattern = "**/a**/a**/a**/a**/a**/a**/a**/a**/b"
    path = "/".join(["a" * 30] * 8)[:240]
    apps = [App(name="w", path="elsewhere", watch=(pattern,))]
    started = time.monotonic()
    assert affected_apps(apps, [path], None, None) == set()
    matching = "/".join(["a" * 29] * 7) + "/aaaaaaaab"
    assert affected_apps(apps, [matching], None, None) == {"w"}
    assert _reference_regex(pattern).fullmatch(matching)
    assert not Glob(pattern).match_or_parent(path)
    assert not Glob(pattern).fullmatch(path + "c")
    assert time.monotonic() - started < 0.5


def test_glob_matches_what_the_regex_translation_matched() -> None:
    rng = random.Random(7)
    atoms = ["a", "b", "/", "*", "**", "**/", "?", "[ab]", "[!a]", "[a-c]"]
    for _ in range(3000):
        pattern = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 6)))
        path = "".join(rng.choice("ab/c") for _ in range(rng.randint(1, 8))).strip("/")
        expected = bool(_reference_regex(pattern).fullmatch(path))
        assert Glob(pattern).fullmatch(path) == expected, (pattern, path)


def test_an_overlong_watch_pattern_is_a_config_error() -> None:
    config = "apps:\n- name: w\n  path: apps/w\n  watch: ['" + "a/" * 200 + "**']\n"
    with pytest.raises(
        ConfigError, match=r"watch: a pattern is 402 characters, over the limit of 256"
    ):
        parse_repo_config(config.encode(), ".sluice.yaml")


# -- diffs ---------------------------------------------------------------------------------


def _config_map(lines: list[str]) -> dict:
    data = {"script": "".join(lines)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": data}


def test_a_40000_line_rewrite_is_summarised_not_diffed() -> None:
    old = [f"line {i} old\n" for i in range(40_000)]
    new = [f"line {i} new\n" if i % 2 else f"line {i} old\n" for i in range(40_000)]
    started = time.monotonic()
    [change] = diff_objects([_config_map(old)], [_config_map(new)], secret_key=b"k")
    assert time.monotonic() - started < 5
    text = to_yaml(_config_map(new))
    size = f"{len(text.splitlines())} lines, {len(text)} bytes"
    assert change.diff.splitlines()[2] == (
        f"# 40000 lines changed, too large to diff (before: {size}; after: {size})"
    )


def test_a_small_edit_in_a_40000_line_object_still_gets_a_real_diff() -> None:
    old = [f"line {i}\n" for i in range(40_000)]
    new = list(old)
    new[25_000] = "line 25000 changed\n"
    started = time.monotonic()
    [change] = diff_objects([_config_map(old)], [_config_map(new)], secret_key=b"k")
    assert time.monotonic() - started < 5
    old_text, new_text = to_yaml(_config_map(old)), to_yaml(_config_map(new))
    expected = "".join(
        difflib.unified_diff(
            old_text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=change.diff.splitlines()[0][4:],
            tofile=change.diff.splitlines()[1][4:],
        )
    )
    assert change.diff == expected
    assert "-    line 25000\n+    line 25000 changed\n" in change.diff


# -- parse failures and deep nesting are one app's error -----------------------------------


def _deep_block(depth: int) -> str:
    return "".join(" " * level + "k:\n" for level in range(depth)) + " " * depth + "v\n"


def test_deep_yaml_json_and_renderer_output_fail_alone(tmp_path: Path) -> None:
    head = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata:\n"
    write(tmp_path, "plain/deep/cm.yaml", head + " " + _deep_block(900).replace("\n", "\n "))
    write(tmp_path, "json/deep/cm.json", '{"a":' * 100_000 + "1" + "}" * 100_000)
    write(tmp_path, "flow/deep/cm.yaml", head + "  x: " + "[" * 900 + "]" * 900 + "\n")
    # Kustomize reads the deep resource fine (Go) and hands back output Sluice refuses.
    write(tmp_path, "kust/deep/kustomization.yaml", "resources: [cm.yaml]\n")
    write(tmp_path, "kust/deep/cm.yaml", head + "  x: " + "[" * 500 + "]" * 500 + "\n")
    write(tmp_path, "charts/deep/Chart.yaml", CHART.format(name="deep"))
    write(
        tmp_path,
        "charts/deep/templates/cm.yaml",
        head + '  x: {{ repeat 500 "[" }}{{ repeat 500 "]" }}\n',
    )
    good = _good_chart(tmp_path)
    apps = [
        App(name=n, path=p)
        for n, p in [
            ("plain", "plain/deep"),
            ("json", "json/deep"),
            ("flow", "flow/deep"),
            ("kust", "kust/deep"),
            ("helm", "charts/deep"),
        ]
    ]
    results = render_apps([*apps, good], tmp_path)
    errors = {r.app.name: r.error for r in results}
    assert errors.pop("good") is None
    for name, error in errors.items():
        assert error is not None and "nested" in error, (name, error)
    assert "levels deep (max_yaml_depth)" in errors["plain"]
    assert errors["json"] == "json/deep/cm.json: JSON is nested too deeply"


# -- the preview's budget, end to end -------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def _repo_with_apps(root: Path, apps: dict[str, str], head_files: dict[str, str]) -> Path:
    """A repo whose base has ``apps`` (name → kustomize dir) and whose head adds
    ``head_files``."""
    repo = root / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    config = "apps:\n" + "".join(f"- {{name: {n}, path: {p}}}\n" for n, p in apps.items())
    write(repo, ".sluice.yaml", config)
    for name, path in apps.items():
        write(repo, f"{path}/kustomization.yaml", "resources: [cm.yaml]\n")
        write(repo, f"{path}/cm.yaml", CM.format(name=name, value="base"))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    _git(repo, "checkout", "-q", "-b", "head")
    for rel, text in head_files.items():
        write(repo, rel, text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "head")
    return repo


def test_preview_over_its_app_budget_fails_closed_and_names_the_rest(tmp_path: Path) -> None:
    apps = {f"app{i}": f"apps/app{i}" for i in range(5)}
    changed = {f"apps/app{i}/cm.yaml": CM.format(name=f"app{i}", value="head") for i in range(5)}
    repo = _repo_with_apps(tmp_path, apps, changed)
    options = PreviewOptions(cache_dir=tmp_path / "cache", budget=PreviewBudget(max_apps=3))
    report = run_preview(repo, "main", "head", options)
    statuses = {a.name: a.status for a in report.apps}
    assert statuses == {
        "app0": "changed",
        "app1": "changed",
        "app2": "changed",
        "app3": "error",
        "app4": "error",
    }
    assert report.errors == ["preview budget exceeded; not rendered: app3, app4"]
    assert report.verdict in ("error", "fail")


def test_preview_over_its_render_cpu_budget_names_the_apps_not_rendered(tmp_path: Path) -> None:
    apps = {f"app{i}": f"apps/app{i}" for i in range(4)}
    changed = {f"apps/app{i}/cm.yaml": CM.format(name=f"app{i}", value="head") for i in range(4)}
    repo = _repo_with_apps(tmp_path, apps, changed)
    options = PreviewOptions(
        cache_dir=tmp_path / "cache", workers=1, budget=PreviewBudget(max_render_cpu_s=0.001)
    )
    report = run_preview(repo, "main", "head", options)
    refused = sorted(a.name for a in report.apps if a.status == "error")
    # The first render spends the budget; nothing after it runs.
    assert refused == ["app1", "app2", "app3"] or refused == ["app0", "app1", "app2", "app3"]
    assert report.errors == [f"preview budget exceeded; not rendered: {', '.join(refused)}"]
    error = next(a.error for a in report.apps if a.name == "app3")
    assert "render CPU seconds are used up (SLUICE_PREVIEW_RENDER_CPU_S)" in error


def test_budget_and_limits_come_from_the_server_environment_only() -> None:
    env = {"SLUICE_PREVIEW_MAX_APPS": "7", "SLUICE_RENDER_MEMORY_MIB": "300"}
    assert PreviewBudget.from_env(env).max_apps == 7
    assert RenderLimits.from_env(env).max_memory_bytes == 300 * 1024 * 1024
    with pytest.raises(ConfigError, match="SLUICE_PREVIEW_RENDER_CPU_S: must be a positive"):
        PreviewBudget.from_env({"SLUICE_PREVIEW_RENDER_CPU_S": "lots"})
    # A head .sluice.yaml has no key for them: it cannot raise them.
    with pytest.raises(ConfigError):
        parse_repo_config(b"apps: []\nlimits: {max_apps: 100000}\n", ".sluice.yaml")


def test_cli_preview_with_an_endless_helm_loop_exits_with_that_apps_error(tmp_path: Path) -> None:
    repo = _repo_with_apps(tmp_path, {"ok": "apps/ok"}, {})
    _loop_chart(repo, "loop")
    config = (repo / ".sluice.yaml").read_text() + "- {name: loop, path: charts/loop}\n"
    write(repo, ".sluice.yaml", config)
    write(repo, "apps/ok/cm.yaml", CM.format(name="ok", value="changed"))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "loop")
    env = {**os.environ, "SLUICE_RENDER_TIMEOUT_S": "2", "SLUICE_CACHE_DIR": str(tmp_path / "c")}
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "preview",
            "--repo",
            str(repo),
            "--base",
            "main",
            "--head",
            "head",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert time.monotonic() - started < 20
    assert proc.returncode == 1, proc.stderr
    apps = {a["name"]: a for a in json.loads(proc.stdout)["apps"]}
    assert apps["loop"]["error"] == "charts/loop: render timed out after 2s"
    assert apps["ok"]["status"] == "changed"


def test_render_slots_bound_renders_across_processes(tmp_path: Path) -> None:
    """Many diamonds at once cannot multiply the per-render memory cap: renders queue."""
    write(tmp_path, "apps/a/kustomization.yaml", "resources: [cm.yaml]\n")
    write(tmp_path, "apps/a/cm.yaml", CM.format(name="a", value="v"))
    slots = RenderSlots(1, tmp_path / "slots")
    slots.directory.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(slots.directory / 'slot-0')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with RenderEngine(sandbox=Sandbox(slots=slots)) as engine:
            app = App(name="a", path="apps/a")
            waited = engine.render(app, tmp_path, limits=RenderLimits(timeout_s=1))
            assert waited.error == (
                "apps/a: render timed out after 1s "
                "(waiting for one of 1 render slots, SLUICE_RENDER_SLOTS)"
            )
            holder.kill()
            holder.wait(10)
            assert engine.render(app, tmp_path).error is None
    finally:
        holder.kill()
        holder.wait(10)


def test_a_parse_failure_nobody_foresaw_is_one_apps_error(tmp_path: Path) -> None:
    """A 5,000-digit YAML integer makes the YAML constructor raise ValueError, not a
    YAML error: still only that app's error, and no digits are quoted."""
    number = "9" * 5000
    write(tmp_path, "plain/huge/cm.yaml", CM.format(name="huge", value=number))
    good = _good_chart(tmp_path)
    results = render_apps([App(name="huge", path="plain/huge"), good], tmp_path)
    assert results[0].error == "plain/huge: cannot read the rendered manifests (ValueError)"
    assert results[1].error is None


# -- the sandbox itself -----------------------------------------------------------------------


def test_a_renderer_sees_no_credentials_proxies_closed_and_an_empty_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_GITHUB_TOKEN", "ghp_must_not_reach_a_renderer")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-reach-a-renderer")
    limits = ChildLimits(memory_bytes=64 * 1024 * 1024, cpu_s=5, wall_s=10)
    result = Sandbox().run(["/bin/sh", "-c", f'{ENV}; {LS} -A "$HOME"'], limits=limits)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert "must-not-reach" not in result.stdout.decode()
    assert env["HTTPS_PROXY"] == env["http_proxy"] == env["ALL_PROXY"] == "http://127.0.0.1:9"
    assert env["NO_PROXY"] == "" and env["GIT_ALLOW_PROTOCOL"] == ""
    assert env["KUBECONFIG"].startswith(env["HOME"])
    # HOME holds only the sandbox's own capture files.
    assert [line for line in lines if "=" not in line] == [".stderr", ".stdout"]


def test_the_whole_process_group_dies_at_the_deadline(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"{SLEEP} 300 & echo $! > {pids}; {SLEEP} 300"
    started = time.monotonic()
    result = Sandbox().run(
        ["/bin/sh", "-c", script], limits=ChildLimits(64 * 1024 * 1024, cpu_s=5, wall_s=1)
    )
    assert time.monotonic() - started < 5
    assert result.killed == "killed at the wall-clock deadline"
    grandchild = int(pids.read_text())
    time.sleep(0.2)
    state = Path(f"/proc/{grandchild}/stat")
    assert not state.exists() or state.read_text().split(")")[1].split()[0] == "Z"

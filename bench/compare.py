"""Sluice against the bare shell pipeline on the all-changed PR, in one run, alternately.

Each round times, in this order: bench/baseline.sh (serial ``git archive`` + render per
app + ``diff -ru``), a cold Sluice preview (empty cache) and a Sluice preview whose base
renders are already cached (an earlier PR against the same base). Wall time by
``perf_counter``; CPU time by ``getrusage`` of this process plus its waited-for children.
A machine shared with other work slows both sides alike, so the ratios mean more than
the seconds.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from stages import StageClock, breakdown, process_cpu

from bot.preview import PreviewOptions, run_preview
from bot.render.kustomize import find_kubectl
from bot.report import render_markdown, to_json

BASELINE = Path(__file__).resolve().parent / "baseline.sh"
BASE, HEAD, ONE_APP = "main", "bump", "pr"


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float


def measure(fn: Callable[[], object]) -> Sample:
    cpu, wall = process_cpu(), time.perf_counter()
    fn()
    return Sample(time.perf_counter() - wall, process_cpu() - cpu)


def write_app_list(repo: Path, dest: Path) -> None:
    config = yaml.safe_load((repo / ".sluice.yaml").read_text())
    lines = [f"{a['name']} {a['path']} {a.get('renderer', 'plain')}" for a in config["apps"]]
    dest.write_text("\n".join(lines) + "\n")


def baseline(repo: Path, apps: Path, work: Path) -> None:
    env = {"KUBECTL": find_kubectl(), "PATH": "/usr/bin:/bin"}
    subprocess.run(
        ["bash", str(BASELINE), str(repo), BASE, HEAD, str(apps), str(work)], check=True, env=env
    )


def sluice(repo: Path, cache: Path, base: str = BASE, head: str = HEAD, **kw) -> int:
    report = run_preview(repo, base, head, PreviewOptions(cache_dir=cache, **kw))
    to_json(report)
    render_markdown(report)
    return len(report.apps)


def bench_compare(repo: Path, workdir: Path, runs: int) -> None:
    apps = workdir / "apps.txt"
    write_app_list(repo, apps)
    total = len(apps.read_text().splitlines())
    rounds = [_round(repo, apps, workdir / f"run{run}", total) for run in range(runs)]
    bare, cold, warm, one = (list(column) for column in zip(*rounds, strict=True))
    print(f"\nall {total} apps changed ({runs} alternating runs, medians):")
    _row("bare pipeline (bench/baseline.sh)", bare)
    _row("sluice, cold cache", cold, bare)
    _row("sluice, base renders cached", warm, bare)
    _row("sluice, 1-app PR, cold cache", one)
    _breakdown(repo, workdir / "breakdown")


def _round(repo: Path, apps: Path, work: Path, total: int) -> tuple[Sample, ...]:
    """One of each, in a fixed order: bare, cold, base cached, 1-app PR."""
    bare = measure(lambda: baseline(repo, apps, work / "bare"))
    rendered: list[int] = []
    cold = measure(lambda: rendered.append(sluice(repo, work / "cold")))
    assert rendered == [total], f"all-changed PR previewed {rendered} apps, expected {total}"
    sluice(repo, work / "warm", BASE, BASE, all_apps=True)  # an earlier PR: base renders cached
    warm = measure(lambda: sluice(repo, work / "warm"))
    one = measure(lambda: sluice(repo, work / "one", BASE, ONE_APP))
    return bare, cold, warm, one


def _median(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.wall for s in samples), statistics.median(s.cpu for s in samples)
    )


def _row(label: str, samples: list[Sample], against: list[Sample] | None = None) -> None:
    m = _median(samples)
    line = f"  {label:<36} wall {m.wall:7.2f} s   CPU {m.cpu:7.2f} s"
    if against:
        b = _median(against)
        line += f"   ratio: wall {m.wall / b.wall:.2f}x, CPU {m.cpu / b.cpu:.2f}x"
    print(line)


def _breakdown(repo: Path, cache: Path) -> None:
    """One more cold all-changed preview, its CPU seconds split by stage."""
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with StageClock() as clock:
        start = process_cpu()
        report = run_preview(repo, BASE, HEAD, PreviewOptions(cache_dir=cache))
        report_clock = StageClock()
        timed_report = report_clock.stage(
            "report", lambda: (to_json(report), render_markdown(report))
        )
        timed_report()
        total = process_cpu() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = (after.ru_utime + after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    clock.cpu["report"] = report_clock.cpu["report"]
    print(f"\nwhere the time goes (one cold all-changed preview, {total:.2f} CPU s):")
    for name, seconds in breakdown(clock, total, children):
        print(f"  {name:<28} {seconds:7.2f} s  {100 * seconds / total:5.1f} %")

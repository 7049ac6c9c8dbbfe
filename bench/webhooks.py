#!/usr/bin/env python3
"""Benchmark ``sluice serve`` (gunicorn + job process) against the GitHub emulator,
on SQLite (one replica) and on PostgreSQL (1, 2 and 3 replicas on one database).

Prints, for each setup:
* intake: deliveries/s and p50/p99 acknowledgement latency for signed
  ``issue_comment`` deliveries (plain remarks, not commands: every one is stored as
  a job and run) sent from ``--threads`` client threads over keep-alive
  connections, spread round-robin over the replicas (as a Service would);
* webhook-to-comment latency for a 1-app PR on the 200-app repo of
  bench/preview.py (SQLite and PostgreSQL with 1 replica), from sending
  ``pull_request opened`` until the emulator holds the report comment (median of
  several runs, each a new head on a warm base).

PostgreSQL is a throwaway server started here (Debian's binaries, fsync on).
Targets (2-core machine): PostgreSQL with 2 replicas ≥ 500 deliveries/s with p99 ≤ 25 ms;
comment on PostgreSQL no more than 10 % slower than on SQLite.

Usage: python bench/webhooks.py [--setups sqlite,pg1,pg2,pg3] [--deliveries 2000]
       [--threads 4] [--runs 5] [--apps 200] [--intake-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from preview import build_repo, git  # noqa: E402  (bench/preview.py)

from bot.report import MARKER  # noqa: E402
from tests.botkit import GH_TOKEN, SluiceServer, github_delivery, server_env, wait_for  # noqa: E402
from tests.emulators.github import GitHubEmulator  # noqa: E402
from tests.pgkit import PgServer  # noqa: E402
from tests.replicakit import Replica  # noqa: E402

REPO = "bench/gitops"
BOT = "sluice-bot"


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def bench_intake(
    servers: list[SluiceServer], gh: GitHubEmulator, deliveries: int, threads: int
) -> tuple[float, float]:
    """Deliveries/s and p99 ack latency (s), clients spread over ``servers``."""
    comment_id = gh.add_comment(REPO, 1, "looks good to me, thanks!", author="reviewer")
    payload = gh.issue_comment_event(REPO, comment_id)
    requests_per_thread = [
        deliveries // threads + (i < deliveries % threads) for i in range(threads)
    ]
    prepared = [
        [github_delivery("issue_comment", payload, delivery=str(uuid.uuid4())) for _ in range(n)]
        for n in requests_per_thread
    ]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures: list[str] = []
    start = threading.Barrier(threads + 1)

    def client(index: int) -> None:
        url = f"{servers[index % len(servers)].url}/webhooks/github"
        session = requests.Session()
        session.post(url, data=b"{}", timeout=10)  # open the keep-alive connection (a 401)
        start.wait()
        for kwargs in prepared[index]:
            t0 = time.perf_counter()
            response = session.post(url, **kwargs, timeout=10)
            latencies[index].append(time.perf_counter() - t0)
            if response.status_code != 202:
                failures.append(f"{response.status_code} {response.text[:100]}")

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    t0 = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"{len(failures)} deliveries failed, e.g. {failures[0]}")
    flat = sorted(v for per_thread in latencies for v in per_thread)
    rate, p99 = deliveries / elapsed, percentile(flat, 0.99)
    print(
        f"  intake: {deliveries} signed deliveries, {threads} threads, keep-alive: "
        f"{rate:7.0f} deliveries/s"
    )
    print(
        f"  intake ack latency: p50 {statistics.median(flat) * 1000:6.2f} ms   "
        f"p99 {p99 * 1000:6.2f} ms   max {flat[-1] * 1000:6.2f} ms"
    )
    return rate, p99


def bench_comment(
    server: SluiceServer, gh: GitHubEmulator, repo: Path, runs: int, first_number: int = 100
) -> list[float]:
    base = git(repo, "rev-parse", "main").strip()
    target = repo / "apps/app42/objects.yaml"
    original = target.read_text()
    timings: list[float] = []
    for run in range(runs + 1):  # run 0 warms the base renders (cold cache), then measure
        git(repo, "checkout", "-q", "-B", f"pr-{run}", "main")
        target.write_text(original.replace("replicas: 2", f"replicas: {run + 3}", 1))
        git(repo, "commit", "-q", "-am", f"bench: scale app42 to {run + 3}")
        head = git(repo, "rev-parse", "HEAD").strip()
        git(repo, "checkout", "-q", "main")
        number = first_number + run
        pull = gh.add_pull(REPO, number=number, base_sha=base, head_sha=head, head_ref=f"pr-{run}")
        payload = gh.pull_request_event(REPO, pull.number)
        t0 = time.perf_counter()
        response = server.github("pull_request", payload)
        assert response.status_code == 202, response.text

        def commented(number: int = number) -> bool:
            comments = gh.comments(REPO, number)
            return any(c.author == BOT and MARKER in c.body for c in comments)

        wait_for(commented, 180, f"the report on PR #{number}", poll=0.002)
        elapsed = time.perf_counter() - t0
        label = "cold cache (not counted)" if run == 0 else "warm base"
        print(f"  webhook → comment, run {run} ({label}): {elapsed * 1000:7.0f} ms")
        if run:
            timings.append(elapsed)
    print(f"  webhook → comment, median of {runs}: {statistics.median(timings) * 1000:7.0f} ms")
    return timings


SETUPS = {"sqlite": 0, "pg1": 1, "pg2": 2, "pg3": 3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default="sqlite,pg1,pg2,pg3")
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument(
        "--intake-only",
        action="store_true",
        help="replicas run --role intake: acknowledgement alone, no job runs beside it",
    )
    args = parser.parse_args()
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        parser.error(f"unknown setup(s) {unknown}; choose from {sorted(SETUPS)}")
    print(f"load average before the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with (
        tempfile.TemporaryDirectory(prefix="sluice-bench-hooks-") as tmp,
        GitHubEmulator(bot_login=BOT, bot_token=GH_TOKEN) as gh,
    ):
        workdir = Path(tmp)
        repo = workdir / "repo"
        t0 = time.perf_counter()
        build_repo(repo, args.apps, args.objects)
        print(f"built the {args.apps}-app repo in {time.perf_counter() - t0:.1f} s")
        gh.add_repo(REPO, clone_url=str(repo))
        gh.add_pull(REPO, number=1, base_sha=git(repo, "rev-parse", "main").strip())
        postgres = PgServer.start(durable=True) if any(SETUPS[s] for s in setups) else None
        results: dict[str, tuple[float, float, float | None]] = {}
        try:
            for setup in setups:
                print(f"== {setup}")
                results[setup] = run_setup(setup, workdir / setup, gh, repo, postgres, args)
        finally:
            if postgres is not None:
                postgres.stop()
    print("setup     deliveries/s   p99 ack ms   webhook→comment ms")
    for setup, (rate, p99, comment) in results.items():
        shown = f"{comment * 1000:10.0f}" if comment is not None else "         -"
        print(f"{setup:8s} {rate:12.0f} {p99 * 1000:12.2f}   {shown}")
    print(f"load average after the run: {os.getloadavg()[0]:.1f}")
    return 0


def run_setup(
    setup: str,
    workdir: Path,
    gh: GitHubEmulator,
    repo: Path,
    postgres: PgServer | None,
    args: argparse.Namespace,
) -> tuple[float, float, float | None]:
    count = SETUPS[setup] or 1
    url = postgres.new_database() if SETUPS[setup] and postgres is not None else None
    servers = []
    for index in range(count):
        env = server_env(workdir / f"r{index}" / "data", github_url=gh.base_url)
        if url is not None:
            env |= {
                "SLUICE_DATABASE_URL": url,
                "SLUICE_FINGERPRINT_KEY": "ab" * 32,
                "SLUICE_REPLICA_ID": f"{setup}-r{index}",
            }
        role = "intake" if args.intake_only else "all"
        servers.append(Replica(env, workdir / f"r{index}.log", role=role))
    for server in servers:
        server.start()
    try:
        rate, p99 = bench_intake(servers, gh, args.deliveries, args.threads)
        comment = None
        if not args.intake_only:
            queue_drained(servers[0], url)
        if setup in ("sqlite", "pg1") and not args.intake_only:
            first = 100 + 100 * list(SETUPS).index(setup)
            comment = statistics.median(bench_comment(servers[0], gh, repo, args.runs, first))
    finally:
        for server in servers:
            server.stop()
    return rate, p99, comment


def queue_drained(server: SluiceServer, url: str | None) -> None:
    from bot.server.storage import open_database
    from bot.server.storage.queue import JobQueue

    database = open_database(url, Path(server.env["SLUICE_DATA_DIR"]) / "sluice.db")
    queue = JobQueue(database)
    t0 = time.perf_counter()

    def drained() -> bool:
        by_state = queue.stats().by_state
        return by_state["queued"] == 0 and by_state["running"] == 0

    wait_for(drained, 300, "the job queue to drain", poll=0.1)
    done = queue.stats().by_state["done"]
    print(
        f"  job processes ran {done} comment jobs; drained {time.perf_counter() - t0:.1f} s later"
    )
    database.close()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark policy evaluation per object, as ``bench/preview.py``'s ``bench_policy`` does.

Loads the default policy library (``policies/*.rego``, package ``main``) and
evaluates 200 apps × 50 objects (Deployments and ConfigMaps) one app per call,
wall time including the round trip to the worker process.  Target on a 2-core
machine: ≤ 0.2 ms per object.

Usage: python bench/policy.py [--apps 200] [--objects 50] [--backend regorus ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from preview import app_objects  # noqa: E402

from bot.policy import make_engine  # noqa: E402
from bot.policy.testing import load_sources  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def bench(backend: str, sources: dict[str, str], apps: int, objects: int, rounds: int) -> float:
    """Best-of-``rounds`` milliseconds per object for ``backend``."""
    batch = [app_objects(i, objects) for i in range(apps)]
    best = float("inf")
    with make_engine(backend, sources) as engine:
        warm = engine.evaluate(batch[0], {"name": "warmup"})
        assert warm.verdict == "pass", (warm.verdict, warm.error, warm.violations[:3])
        for _ in range(rounds):
            start = time.perf_counter()
            for i, objs in enumerate(batch):
                engine.evaluate(objs, {"name": f"app{i}", "path": "", "namespace": None})
            best = min(best, time.perf_counter() - start)
    return best * 1000 / (apps * objects)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", action="append", choices=["regorus", "regopy"])
    args = parser.parse_args()
    sources = load_sources(ROOT / "policies")
    for backend in args.backend or ["regorus", "regopy"]:
        per_object = bench(backend, sources, args.apps, args.objects, args.rounds)
        total = args.apps * args.objects
        print(f"policy {backend:<8} {total} objects {per_object:12.3f} ms/object")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark bot.render: one Kustomize render of a 50-object app, and 100 such apps in parallel.

Prints milliseconds for: a single ``kubectl kustomize`` render (median of 5),
100 apps through ``render_apps`` cold (no cache), and the same 100 apps again
from a warm ``RenderCache``.

Usage: python bench/render.py [--apps 100] [--objects 50] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.models import App  # noqa: E402
from bot.render import RenderCache, RenderEngine, render_app, render_apps  # noqa: E402

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: main
        image: registry.example.com/{name}:1.0.{i}
        ports: [{{containerPort: 8080}}]
        resources: {{limits: {{cpu: 100m, memory: 128Mi}}}}
"""


def build_app(root: Path, index: int, objects: int) -> App:
    path = f"apps/app-{index:03d}"
    base = root / path / "base"
    overlay = root / path / "prod"
    base.mkdir(parents=True)
    overlay.mkdir(parents=True)
    files = []
    for i in range(objects):
        name = f"svc-{index}-{i}"
        (base / f"{name}.yaml").write_text(DEPLOYMENT.format(name=name, i=i))
        files.append(f"{name}.yaml")
    (base / "kustomization.yaml").write_text("resources:\n" + "".join(f"- {f}\n" for f in files))
    (overlay / "kustomization.yaml").write_text(
        "resources: [../base]\nnamespace: prod\ncommonLabels: {env: prod}\n"
    )
    return App(name=f"app-{index:03d}", path=f"{path}/prod")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        apps = [build_app(root, i, args.objects) for i in range(args.apps)]
        engine = RenderEngine()

        singles = []
        for _ in range(5):
            started = time.perf_counter()
            result = render_app(apps[0], root, engine=engine)
            singles.append((time.perf_counter() - started) * 1000)
            assert result.error is None and len(result.objects) == args.objects, result.error
        print(f"one kustomize render, {args.objects} objects: {statistics.median(singles):.0f} ms")

        started = time.perf_counter()
        results = render_apps(apps, root, workers=args.workers, engine=engine)
        cold = (time.perf_counter() - started) * 1000
        assert all(r.error is None for r in results)
        print(f"{args.apps} kustomize apps, {args.workers} workers, no cache: {cold:.0f} ms")

        cache = RenderCache(root / ".cache")
        render_apps(apps, root, workers=args.workers, cache=cache, engine=engine)
        started = time.perf_counter()
        render_apps(apps, root, workers=args.workers, cache=cache, engine=engine)
        warm = (time.perf_counter() - started) * 1000
        print(f"{args.apps} kustomize apps from a warm disk cache: {warm:.0f} ms")


if __name__ == "__main__":
    main()

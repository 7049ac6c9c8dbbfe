#!/usr/bin/env python3
"""Benchmark the puller against the Kubernetes API emulator: 1,000 objects in 20 apps.

A real GitOps repository (signed commits, a ledger signed by the bot's key), the real
``PullerAgent`` with its ``Applier`` talking to the emulator over HTTP through the
official client. Objects: ConfigMaps, Secrets, Services and ServiceAccounts (kinds that
are healthy as soon as they exist, so no rollout is waited for), spread evenly over the
apps. Prints, with LISTs per kind, writes and GETs answered 404:

* full apply: the first cycle (fetch, ledger and signature checks, render, policy,
  server-side apply of every object of every app, inventory, health);
* no-op cycle: the next cycle over the same revisions (every app's drift check);
* no-op wake: a woken cycle (drift and health of every app, recorded as in sync);
* a no-op ``Applier.apply`` of one app's objects;
* drift check: one object edited behind the puller's back, then ``Applier.drift``.

Targets (2-core machine): full apply <= 15 s; each no-op <= 2 s with 0 writes and at most
one LIST per kind across all apps.

Usage: python bench/puller.py [--objects 1000] [--apps 20]
"""

from __future__ import annotations

import argparse
import base64
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import kubernetes.client
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.diff import normalize  # noqa: E402
from tests import gpgkit  # noqa: E402
from tests.emulators.kube import KubeEmulator  # noqa: E402
from tests.pullerkit import POLICIES, EventReceiver, World, make_keys  # noqa: E402

KINDS = ("ConfigMap", "Secret", "Service", "ServiceAccount")
FULL_APPLY_TARGET_S = 15.0
NOOP_TARGET_S = 2.0


def objects(count: int) -> list[dict]:
    """``count`` objects spread over KINDS, each with the labels the policies ask for."""
    result = []
    for index in range(count):
        kind = KINDS[index % len(KINDS)]
        name = f"{kind.lower()}-{index:04d}"
        meta = {"name": name, "labels": {"app.kubernetes.io/name": name,
                                         "app.kubernetes.io/instance": "bench"}}  # fmt: skip
        obj: dict = {"apiVersion": "v1", "kind": kind, "metadata": meta}
        if kind == "ConfigMap":
            obj["data"] = {"index": str(index), "payload": "x" * 200}
        elif kind == "Secret":
            obj["data"] = {"token": base64.b64encode(f"secret-{index}".encode()).decode()}
        elif kind == "Service":
            obj["spec"] = {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}
        result.append(obj)
    return result


def sluice_config(apps: list[str]) -> str:
    entries = [{"name": app, "path": f"apps/{app}", "namespace": "web"} for app in apps]
    return yaml.safe_dump(
        {"apps": entries, "policy": {"paths": ["policies/"]}, "signatures": {"mode": "all"}}
    )


def report(label: str, seconds: float, emu: KubeEmulator) -> tuple[int, Counter[str]]:
    writes, lists = emu.write_calls(), emu.calls_by_kind("list")
    missing = sum(emu.calls_by_kind("get", status=404).values())
    calls = dict(sorted(emu.calls().items()))
    print(f"{label:<34} {seconds:7.2f} s   writes {writes:5d}   GET-404s {missing:4d}")
    print(f"{'':<34} calls {calls}")
    print(f"{'':<34} LISTs per kind {dict(sorted(lists.items()))}")
    return writes, lists


def timed(label: str, emu: KubeEmulator, run) -> tuple[float, int, Counter[str], object]:
    emu.reset_calls()
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    writes, lists = report(label, seconds, emu)
    return seconds, writes, lists, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--apps", type=int, default=20)
    args = parser.parse_args()
    problems: list[str] = []
    apps = [f"app-{index:02d}" for index in range(args.apps)]
    every = objects(args.objects)
    size = -(-len(every) // len(apps))
    per_app = {app: every[index * size : (index + 1) * size] for index, app in enumerate(apps)}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-puller-") as tmp_name:
        tmp = Path(tmp_name)
        keys = make_keys(tmp)
        origin = gpgkit.init_repo(tmp / "gitops")
        shutil.copytree(POLICIES, origin / "policies", ignore=shutil.ignore_patterns("*_test.rego"))
        emu = KubeEmulator().start()
        emu.add_namespace("web")
        receiver = EventReceiver()
        try:
            world = World(tmp, keys, origin, emu, receiver, tmp / "puller-data")
            files = {".sluice.yaml": sluice_config(apps)}
            for app, objs in per_app.items():
                files[f"apps/{app}/objects.yaml"] = yaml.safe_dump_all(objs, sort_keys=False)
            world.anchor = world.commit(files, "objects")
            for app in apps:
                world.record(world.anchor, app=app)
            agent = world.agent(interval_s=3600, apps=["app-*"])
            print(f"puller bench: {len(apps)} apps, {args.objects} objects ({', '.join(KINDS)})")

            full, _, _, ok = timed("full apply (first cycle)", emu, agent.run_cycle)
            created = sum(agent.status(app)["last_result"]["created"] for app in apps)
            print(f"{'':<34} created {created}")
            if not ok or created != args.objects:
                problems.append(f"the first cycle created {created} of {args.objects} objects")
            if full > FULL_APPLY_TARGET_S:
                problems.append(f"full apply {full:.2f} s > {FULL_APPLY_TARGET_S:g} s")

            seconds, writes, lists, _ = timed("no-op cycle (drift checks)", emu, agent.run_cycle)
            problems += noop_problems("no-op cycle", seconds, writes, lists)
            seconds, writes, lists, _ = timed(
                "no-op wake (drift and health)", emu, lambda: agent.run_cycle(woken=True)
            )
            problems += noop_problems("no-op wake", seconds, writes, lists)

            first = apps[0]
            desired = [normalize(obj, "web") for obj in per_app[first]]  # as rendered
            seconds, writes, lists, result = timed(
                f"no-op Applier.apply ({first})", emu, lambda: agent.applier.apply(first, desired)
            )
            print(f"{'':<34} {result.counts()}")
            problems += noop_problems("no-op apply", seconds, writes, lists)

            edited = per_app[first][0]["metadata"]["name"]
            core = kubernetes.client.CoreV1Api(emu.api_client())
            core.patch_namespaced_config_map(
                edited, "web", {"data": {"index": "edited"}}, field_manager="kubectl"
            )
            _, writes, _, drift = timed(
                "drift check (1 object edited)",
                emu,
                lambda: agent.applier.drift(first, desired, secret_key=agent.secret_key),
            )
            print(f"{'':<34} drift: {[f'{c.kind}/{c.name}' for c in drift]}")
            if [c.name for c in drift] != [edited] or writes:
                problems.append(f"drift check found {drift!r} with {writes} writes")
        finally:
            receiver.close()
            emu.stop()
            gpgkit.kill_agent(keys.home)
    print("targets: full apply <= 15 s; no-op <= 2 s, 0 writes, <= 1 LIST per kind")
    for problem in problems:
        print(f"MISSED: {problem}")
    print("all targets met" if not problems else f"{len(problems)} target(s) missed")
    return 1 if problems else 0


def noop_problems(label: str, seconds: float, writes: int, lists: Counter[str]) -> list[str]:
    problems = []
    if seconds > NOOP_TARGET_S:
        problems.append(f"{label} {seconds:.2f} s > {NOOP_TARGET_S:g} s")
    if writes:
        problems.append(f"{label} made {writes} writes")
    repeated = {kind: n for kind, n in lists.items() if n > 1}
    if repeated:
        problems.append(f"{label} listed a kind more than once: {repeated}")
    return problems


if __name__ == "__main__":
    sys.exit(main())

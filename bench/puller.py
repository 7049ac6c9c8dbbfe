#!/usr/bin/env python3
"""Benchmark the puller against the Kubernetes API emulator with one 1,000-object app.

A real GitOps repository (signed commits, a ledger signed by the bot's key), the real
``PullerAgent`` with its ``Applier`` talking to the emulator over HTTP through the
official client. Objects: ConfigMaps, Secrets, Services and ServiceAccounts (kinds that
are healthy as soon as they exist, so no rollout is waited for). Prints:

* full apply: the first cycle (fetch, ledger and signature checks, render, policy,
  server-side apply of every object, inventory, health);
* no-op cycle: the next cycle over the same revision (its drift check), and a no-op
  ``Applier.apply`` of the same objects: seconds, write calls, LISTs per kind;
* drift check: one object edited behind the puller's back, then ``Applier.drift``.

Targets (2-core machine): full apply ≤ 15 s; no-op ≤ 2 s with 0 writes and at most
one LIST per kind.

Usage: python bench/puller.py [--objects 1000]
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
from tests.pullerkit import POLICIES, EventReceiver, World, make_keys, sluice_yaml  # noqa: E402

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


def lists_per_kind(emu: KubeEmulator) -> Counter[str]:
    """LIST requests per resource (the last path segment), dry runs left out."""
    return Counter(r.path.rstrip("/").rsplit("/", 1)[-1] for r in emu.requests if r.verb == "list")


def report(label: str, seconds: float, emu: KubeEmulator) -> tuple[int, Counter[str]]:
    writes, lists = emu.write_calls(), lists_per_kind(emu)
    calls = dict(sorted(emu.calls().items()))
    print(f"{label:<34} {seconds:7.2f} s   writes {writes:5d}   calls {calls}")
    print(f"{'':<34} LISTs per kind {dict(sorted(lists.items()))}")
    return writes, lists


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    args = parser.parse_args()
    problems: list[str] = []
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
            manifest = yaml.safe_dump_all(objects(args.objects), sort_keys=False)
            files = {".sluice.yaml": sluice_yaml(), "apps/web/objects.yaml": manifest}
            world.record(world.commit(files, "1,000 objects"))
            agent = world.agent(interval_s=3600)
            print(f"puller bench: 1 app, {args.objects} objects ({', '.join(KINDS)})")

            emu.reset_calls()
            started = time.perf_counter()
            ok = agent.run_cycle()
            full = time.perf_counter() - started
            report("full apply (first cycle)", full, emu)
            last = agent.status("web")["last_result"]
            print(f"{'':<34} result {last['result']}, health {last['health']}, "
                  f"created {last['created']}")  # fmt: skip
            if not ok or last["created"] != args.objects:
                problems.append(f"the first cycle did not create every object: {last}")
            if full > FULL_APPLY_TARGET_S:
                problems.append(f"full apply {full:.2f} s > {FULL_APPLY_TARGET_S:g} s")

            emu.reset_calls()
            started = time.perf_counter()
            agent.run_cycle()
            cycle = time.perf_counter() - started
            writes, lists = report("no-op cycle (drift check)", cycle, emu)
            problems += noop_problems("no-op cycle", cycle, writes, lists)

            desired = [normalize(obj, "web") for obj in objects(args.objects)]  # as rendered
            emu.reset_calls()
            started = time.perf_counter()
            result = agent.applier.apply("web", desired)
            noop = time.perf_counter() - started
            writes, lists = report("no-op Applier.apply", noop, emu)
            print(f"{'':<34} {result.counts()}")
            problems += noop_problems("no-op apply", noop, writes, lists)

            core = kubernetes.client.CoreV1Api(emu.api_client())
            core.patch_namespaced_config_map(
                "configmap-0000", "web", {"data": {"index": "edited"}}, field_manager="kubectl"
            )
            emu.reset_calls()
            started = time.perf_counter()
            drift = agent.applier.drift("web", desired, secret_key=agent.secret_key)
            check = time.perf_counter() - started
            writes, _ = report("drift check (1 object edited)", check, emu)
            print(f"{'':<34} drift: {[f'{c.kind}/{c.name}' for c in drift]}")
            if [c.name for c in drift] != ["configmap-0000"] or writes:
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

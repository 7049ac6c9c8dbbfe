#!/usr/bin/env python3
"""Benchmark the preview engine on a synthetic 200-app GitOps repository.

Builds a repo of 200 apps × 50 objects (half Kustomize, half plain YAML), then
prints: a 1-app PR preview (cold and with the base already cached), an ``--all``
preview, the all-changed PR (every app's inputs change: a common image bump)
against the bare shell pipeline (bench/baseline.sh: ``git archive`` + ``kubectl
kustomize``/``cat`` per app + ``diff -ru``) timed alternately in the same run, with
medians and ratios (wall and CPU), where Sluice's CPU time goes, policy time per
object, signature checks over a 1,000-commit range (cold and cached) and peak RSS.

Targets (2-core machine): all-changed cold ≤ 0.5× the bare pipeline's wall time and
≤ 0.7× its CPU, base cached ≤ 0.3×, 1-app PR cold ≤ 0.6 s, RSS ≤ 300 MB.

Usage: python bench/preview.py [--apps 200] [--objects 50] [--commits 1000] [--runs 3]
       [--only compare]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import bench_compare

from bot.gitops import Git
from bot.policy import make_engine
from bot.preview import PreviewOptions, load_policy_sources, run_preview
from bot.signatures import SignatureVerifier, TrustedKeys

ROOT = Path(__file__).resolve().parent.parent


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def deployment(app: int, index: int) -> dict:
    name = f"app{app}-d{index}"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": f"app{app}"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                    "containers": [
                        {
                            "name": "main",
                            "image": f"ghcr.io/example/{name}:1.{index}.0",
                            "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ],
                },
            },
        },
    }


def config_map(app: int, index: int) -> dict:
    name = f"app{app}-c{index}"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": f"app{app}"},
        },
        "data": {"key": f"value-{index}"},
    }


def app_objects(app: int, count: int) -> list[dict]:
    return [deployment(app, i) if i % 2 == 0 else config_map(app, i) for i in range(count)]


class PlainDumper(yaml.SafeDumper):
    """Writes manifests as people do: no ``&id001`` anchors for the shared label maps."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def write_app(repo: Path, app: int, count: int) -> dict:
    path = f"apps/app{app}"
    target = repo / path
    target.mkdir(parents=True)
    objects = app_objects(app, count)
    text = yaml.dump_all(objects, Dumper=PlainDumper, sort_keys=False)
    (target / "objects.yaml").write_text(text)
    entry = {"name": f"app{app}", "path": path, "namespace": f"ns{app}"}
    if app % 2 == 0:
        (target / "kustomization.yaml").write_text(
            yaml.safe_dump({"resources": ["objects.yaml"], "commonLabels": {"tier": "bench"}})
        )
        entry["renderer"] = "kustomize"
    else:
        entry["renderer"] = "plain"
    return entry


def build_repo(repo: Path, apps: int, objects: int) -> None:
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    entries = [write_app(repo, i, objects) for i in range(apps)]
    config = {"apps": entries, "policy": {"paths": ["policies/"]}, "signatures": {"mode": "off"}}
    (repo / ".sluice.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    policies = repo / "policies"
    policies.mkdir()
    for rego in sorted((ROOT / "policies").glob("*.rego")):
        if not rego.name.endswith("_test.rego"):
            (policies / rego.name).write_text(rego.read_text())
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench: 200 apps")
    git(repo, "checkout", "-q", "-b", "pr")
    target = repo / f"apps/app{min(42, apps - 1)}/objects.yaml"
    target.write_text(target.read_text().replace("replicas: 2", "replicas: 3", 1))
    git(repo, "commit", "-q", "-am", "bench: scale one app")
    # The PR where a preview matters most: every app's inputs change (a common image bump).
    git(repo, "checkout", "-q", "-b", "bump", "main")
    for app in range(apps):
        target = repo / f"apps/app{app}/objects.yaml"
        target.write_text(target.read_text().replace(":1.", ":2."))
    git(repo, "commit", "-q", "-am", "bench: bump every image")
    git(repo, "checkout", "-q", "main")


def timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {elapsed * 1000:9.1f} ms")
    return result, elapsed


def bench_preview(repo: Path, workdir: Path) -> None:
    def preview(cache: str, **kw):
        options = PreviewOptions(cache_dir=workdir / cache, **kw)
        return run_preview(repo, "main", "pr", options)

    report, _ = timed("1-app PR preview, cold cache", lambda: preview("c1"))
    assert len(report.apps) == 1, [a.name for a in report.apps]
    timed("1-app PR preview, base cached (warm)", lambda: preview("c1"))
    report, _ = timed("--all preview, cold cache", lambda: preview("c2", all_apps=True))
    print(f"  apps rendered: {len(report.apps)}, verdict {report.verdict}")
    timed("--all preview, warm cache", lambda: preview("c2", all_apps=True))


def bench_policy(repo: Path, apps: int, objects: int) -> None:
    g = Git(repo)
    sources = load_policy_sources(g, g.resolve("main"), ["policies/"])
    for backend in ("regorus", "regopy"):
        engine = make_engine(backend, sources)
        try:
            batch = [app_objects(i, objects) for i in range(apps)]
            engine.evaluate(batch[0], {"name": "warmup"})
            start = time.perf_counter()
            for i, objs in enumerate(batch):
                engine.evaluate(objs, {"name": f"app{i}", "path": "", "namespace": None})
            elapsed = time.perf_counter() - start
            total = apps * objects
            print(f"policy {backend:<8} {total} objects {elapsed * 1000 / total:12.3f} ms/object")
        finally:
            engine.close()


def bench_signatures(workdir: Path, commits: int) -> None:
    home = workdir / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    uid = "Bench Signer <bench@sluice.invalid>"
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
        env=env,
    )
    keys = workdir / "keys"
    keys.mkdir()
    armored = subprocess.run(
        ["gpg", "--armor", "--export", uid], check=True, capture_output=True, env=env
    ).stdout
    (keys / "bench.asc").write_bytes(armored)
    repo = workdir / "sigrepo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "base")
    start = time.perf_counter()
    for i in range(commits):
        git(
            repo,
            "-c",
            "user.signingkey=" + uid,
            "commit",
            "-q",
            "-S",
            "--allow-empty",
            "-m",
            f"c{i}",
            env=env,
        )
    print(f"(made {commits} signed commits in {time.perf_counter() - start:.1f} s)")
    g = Git(repo)
    base = g.resolve("main~" + str(commits))
    head = g.resolve("main")
    trusted = TrustedKeys.load(keys)
    cache = workdir / "sigcache"
    with SignatureVerifier(trusted, cache_dir=cache) as verifier:
        report, _ = timed(
            f"signatures, {commits} commits, cold", lambda: verifier.verify(g, base, head, "all")
        )
    assert report.verdict == "pass", report.verdict
    with SignatureVerifier(trusted, cache_dir=cache) as verifier:
        timed(
            f"signatures, {commits} commits, cached", lambda: verifier.verify(g, base, head, "all")
        )
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True)


def peak_rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per side")
    parser.add_argument(
        "--only", choices=("compare",), help="only the all-changed comparison and 1-app PR"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        workdir = Path(tmp)
        repo = workdir / "repo"
        _, _ = timed(
            f"build repo ({args.apps} apps x {args.objects} objects)",
            lambda: build_repo(repo, args.apps, args.objects),
        )
        if args.only is None:
            bench_preview(repo, workdir)
        bench_compare(repo, workdir, args.runs)
        if args.only is None:
            bench_policy(repo, args.apps, args.objects)
            bench_signatures(workdir, args.commits)
    own, children = peak_rss_mb()
    print(f"peak RSS: sluice process {own:.0f} MB, largest child process {children:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

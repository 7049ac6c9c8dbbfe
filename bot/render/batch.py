"""Many Kustomize apps per ``kubectl kustomize`` process, byte-identical to one render each.

Starting kubectl costs about as much as rendering a 50-object app, so the render engine
builds a synthetic root over several apps instead: each app sits under a wrapper
kustomization whose only transformer matches no image (a no-op), and the root asks for
``buildMetadata: [transformerAnnotations]``. Every output object then names its wrapper,
hence its app (an origin annotation would not: apps sharing a base share its files).
The annotation is stripped and the output split back per app.

A batch is used only when it cannot differ from the per-app renders; anything else falls
back to rendering the apps one by one, so any error shown is the per-app one:
- apps whose kustomizations use features that act across the whole build (``vars``,
  ``configurations``, ``crds``, ``openapi``, ``sortOptions``, ``buildMetadata``) or
  whose inputs already carry the annotations this module uses are never batched;
- any failure of the batch (an error, a clash of two apps' resource IDs, a breached
  sandbox limit, an object without provenance) renders all of its apps one by one;
- an app whose output mentions a name or namespace that only another app of the batch
  has (what kustomize's cross-app name-reference fix-up would produce, e.g. a reference
  to a hash-suffixed ConfigMap of another app) is rendered again on its own.

A batch runs in one sandboxed child with the per-render limits, on a confined tree holding
the union of its apps' inputs. So one app could read a file that another app of the batch
declares and its own static walk missed; the walk accepts exact Kustomize field names only,
which is what keeps that set empty.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.models import App, K8sObject, RenderedApp
from bot.render.cache import RenderCache
from bot.render.kustomize import KUSTOMIZATION_FILES, run_kustomize
from bot.render.limits import RenderError, RenderLimits
from bot.render.manifests import load_manifests
from bot.render.tree import ExportTree

if TYPE_CHECKING:
    from bot.render.engine import RenderEngine, RenderPlan

# kustomize's last pass (name references) grows with the square of a build's objects:
# measured, a batch of 4-8 apps of 50 objects costs 0.045 CPU s per app, one app alone
# 0.06-0.08 (half of it process start), 32 apps 0.14 per app. So batches are bounded by
# their estimated object count, not only by their number of apps.
MAX_BATCH_OBJECTS = 300
MAX_BATCH = 16
TRANSFORMATIONS = "alpha.config.kubernetes.io/transformations"
_MARKERS = (b"config.kubernetes.io/origin", TRANSFORMATIONS.encode())
_GLOBAL_FIELDS = re.compile(rb"\b(vars|configurations|crds|openapi|sortOptions|buildMetadata)\b")
_WRAPPER = re.compile(r"configuredIn: (\d+)/kustomization\.yaml$", re.MULTILINE)
# Matches no real image: the wrapper's transformer changes nothing but is recorded.
_NO_OP = "images:\n- name: sluice-batch.invalid/provenance\n  newTag: unused\n"


@dataclass
class _Job:
    index: int
    app: App
    plan: RenderPlan
    key: str
    # Objects the app's inputs hold, estimated by counting "kind:" (batch sizing only).
    weight: int = 1


def render_many(
    engine: RenderEngine,
    apps: Sequence[App],
    root: Path,
    limits: RenderLimits,
    cache: RenderCache | None,
    workers: int,
) -> list[RenderedApp]:
    """``engine.render`` of every app, in order; Kustomize cache misses go in batches."""
    tree = ExportTree(root)
    results: list[RenderedApp | None] = [None] * len(apps)
    with ThreadPoolExecutor(workers, thread_name_prefix="sluice-render") as pool:
        jobs = list(pool.map(lambda i: _job(engine, apps, i, tree, limits), range(len(apps))))
        batchable: list[_Job] = []
        for job in filter(None, jobs):
            cached = cache.get(job.key, count_miss=False) if cache is not None else None
            if cached is not None:
                results[job.index] = _rendered(job, cached)
            else:
                batchable.append(job)
        batches = _group(batchable, workers)
        if len(batchable) < 2:
            batches = []
        grouped = {job.index for batch in batches for job in batch}
        singles = [i for i in range(len(apps)) if results[i] is None and i not in grouped]
        one = lambda i: engine.render(apps[i], root, limits=limits, cache=cache)  # noqa: E731
        futures = [(i, pool.submit(one, i)) for i in singles]
        done = pool.map(lambda batch: render_batch(engine, tree, batch, limits), batches)
        for batch, objects in zip(batches, done, strict=True):
            for job in batch:
                found = objects.get(job.index)
                if found is None:
                    futures.append((job.index, pool.submit(one, job.index)))
                    continue
                if cache is not None:
                    cache.put(job.key, found)
                results[job.index] = _rendered(job, found)
        for index, future in futures:
            results[index] = future.result()
    return [r for r in results if r is not None]


def _rendered(job: _Job, objects: list[K8sObject]) -> RenderedApp:
    return RenderedApp(job.app, "kustomize", objects=objects, inputs=job.plan.inputs)


def _job(
    engine: RenderEngine, apps: Sequence[App], index: int, tree: ExportTree, limits: RenderLimits
) -> _Job | None:
    """A Kustomize app that may share a batch, with its cache key; None: render it alone."""
    from bot.render.engine import plan_render, resolve_renderer

    app = apps[index]
    if app.sources or app.unrendered or not app.path:
        return None
    try:
        if resolve_renderer(app, tree)[1] != "kustomize":
            return None
        plan = plan_render(app, tree, limits)
        if plan.renderer != "kustomize" or not plan.directory:
            return None
        files = [(rel, tree.read_bytes(rel, limits)) for rel in plan.inputs]
    except (RenderError, OSError):
        return None  # the per-app render reports it
    for rel, data in files:
        if any(marker in data for marker in _MARKERS):
            return None
        if rel.rpartition("/")[2] in KUSTOMIZATION_FILES and _GLOBAL_FIELDS.search(data):
            return None
    weight = max(1, sum(data.count(b"kind:") for _rel, data in files))
    return _Job(index, app, plan, engine.cache_key(plan, files, limits), weight)


def _group(jobs: list[_Job], workers: int) -> list[list[_Job]]:
    """Batches of at most MAX_BATCH apps and about MAX_BATCH_OBJECTS objects, at least one
    per worker, one app per directory. An app too big to share is rendered alone.

    Apps that share input files (overlays of one base) go to different batches when there
    is room: they often emit the same names, and a clash would send the batch back to
    per-app renders.
    """
    seen: set[str] = set()
    unique = []
    for job in jobs:
        if job.plan.directory not in seen and job.weight < MAX_BATCH_OBJECTS:
            seen.add(job.plan.directory)
            unique.append(job)
    total = sum(job.weight for job in unique)
    count = max(workers, math.ceil(total / MAX_BATCH_OBJECTS), math.ceil(len(unique) / MAX_BATCH))
    budget = max(1, math.ceil(total / count))
    batches: list[_Batch] = [_Batch() for _ in range(count)]
    for job in unique:
        room = [b for b in batches if b.fits(job, budget)] or [_Batch()]
        if room[0] not in batches:
            batches.append(room[0])
        disjoint = [b for b in room if not (b.inputs & job.plan.inputs)]
        min(disjoint or room, key=lambda b: b.load).add(job)
    return [batch.jobs for batch in batches if len(batch.jobs) > 1]


@dataclass
class _Batch:
    jobs: list[_Job] = field(default_factory=list)
    load: int = 0
    inputs: set[str] = field(default_factory=set)

    def fits(self, job: _Job, budget: int) -> bool:
        return len(self.jobs) < MAX_BATCH and (not self.jobs or self.load + job.weight <= budget)

    def add(self, job: _Job) -> None:
        self.jobs.append(job)
        self.load += job.weight
        self.inputs |= job.plan.inputs


def render_batch(
    engine: RenderEngine, tree: ExportTree, jobs: list[_Job], limits: RenderLimits
) -> dict[int, list[K8sObject]]:
    """Objects per job index for the apps this batch rendered faithfully (maybe none)."""
    if len(jobs) < 2 or engine.budget_spent():
        return {}
    deadline = time.monotonic() + limits.timeout_s
    try:
        # No per-app parse of the inputs here (KustomizeTree.check): what it refuses,
        # kubectl refuses or the output parse below does (same node, depth and size
        # bounds), and then each app is rendered alone, with its own check and message.
        inputs = {rel for job in jobs for rel in job.plan.inputs}
        with tree.confined(inputs) as only:
            directory = _write_root(only, jobs)
            output = run_kustomize(
                engine.kubectl(), only, directory, limits, deadline, sandbox=engine.sandbox
            )
        # Objects are counted per app below; the node and size bounds stay those of one
        # app's output, so a batch never accepts what one app's render would refuse.
        scaled = replace(limits.for_output(), max_objects=limits.max_objects * len(jobs))
        objects = load_manifests(output, "kustomize batch output", scaled)
        split = _split(objects, len(jobs))
    except (RenderError, OSError):
        return {}
    if split is None:
        return {}
    suspects = _suspects(split)
    rendered = {
        jobs[n].index: found
        for n, found in enumerate(split)
        if n not in suspects and len(found) <= limits.max_objects
    }
    engine.count_renders(len(rendered))
    return rendered


def _write_root(tree: ExportTree, jobs: list[_Job]) -> str:
    """The synthetic root inside the confined tree; returns its repo-relative directory."""
    root = Path(tempfile.mkdtemp(prefix=".sluice-batch-", dir=tree.root))
    for n, job in enumerate(jobs):
        wrapper = root / str(n)
        wrapper.mkdir()
        (wrapper / "kustomization.yaml").write_text(
            f"resources:\n- ../../{job.plan.directory}\n{_NO_OP}"
        )
    listed = "".join(f"- '{n}'\n" for n in range(len(jobs)))
    (root / "kustomization.yaml").write_text(
        f"buildMetadata: [transformerAnnotations]\nresources:\n{listed}"
    )
    return root.name


def _split(objects: list[K8sObject], count: int) -> list[list[K8sObject]] | None:
    """Objects per app, provenance annotation removed; None if any object lacks it."""
    split: list[list[K8sObject]] = [[] for _ in range(count)]
    for obj in objects:
        metadata = obj.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if not isinstance(annotations, dict):
            return None
        found = _WRAPPER.findall(str(annotations.pop(TRANSFORMATIONS, "")))
        if len(found) != 1 or int(found[0]) >= count:
            return None
        if not annotations:
            del metadata["annotations"]
        split[int(found[0])].append(obj)
    return split


def _suspects(split: list[list[K8sObject]]) -> set[int]:
    """Apps whose output names a name or namespace only another app of the batch has."""
    tokens = [_tokens(objects) for objects in split]
    owners: dict[str, set[int]] = {}
    for n, own in enumerate(tokens):
        for token in own:
            owners.setdefault(token, set()).add(n)
    suspects = set()
    for n, objects in enumerate(split):
        for value in _strings(objects):
            if value in owners and value not in tokens[n]:
                suspects.add(n)
                break
    return suspects


def _tokens(objects: list[K8sObject]) -> set[str]:
    found = set()
    for obj in objects:
        metadata = obj.get("metadata") or {}
        for key in ("name", "namespace"):
            if isinstance(metadata.get(key), str):
                found.add(metadata[key])
    return found


def _strings(value: Any) -> Iterator[str]:
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, str):
            yield current
        elif isinstance(current, dict):
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)

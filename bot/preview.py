"""The preview pipeline: base and head of a GitOps repo in, one ``Report`` out.

The CLI (``sluice preview``), the bot and the puller all call ``run_preview``.
Gate settings (policy paths, signature mode) and policies always come from the
base revision, so a change cannot weaken the gate that judges it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bot.app_report import (
    PolicyPool,
    budget_errors,
    checked_app_report,
    mark_new,
    over_budget,
    same_input,
)
from bot.config import (
    DISCOVER_EVERYTHING,
    REPO_CONFIG_FILE,
    ConfigError,
    RepoConfig,
    parse_repo_config,
)
from bot.diff import load_or_create_key
from bot.diff.leaks import guard_app_report
from bot.evaluated import NormalizedRenders, PolicyResults
from bot.exports import ExportCache
from bot.gitops import Git, GitError
from bot.models import App, AppReport, RenderedApp, Report, overall_verdict
from bot.policy import PolicyEngine, make_engine
from bot.render import (
    RenderCache,
    RenderEngine,
    RenderLimits,
    affected_apps,
    render_apps,
    render_inputs,
)
from bot.render.discovery.discover import describe, discover_apps
from bot.render.limits import PreviewBudget
from bot.signatures import SignatureVerifier, TrustedKeys

POLICY_SUFFIX = ".rego"
POLICY_TEST_SUFFIX = "_test.rego"


class PreviewError(RuntimeError):
    """The preview could not run at all (unknown revision, unreadable repo)."""


def default_cache_dir() -> Path:
    explicit = os.environ.get("SLUICE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "sluice"


@dataclass(frozen=True)
class PreviewOptions:
    keys_dir: Path | None = None
    all_apps: bool = False
    # Apps to render even when the change does not touch them (``/diff app``).
    extra_apps: tuple[str, ...] = ()
    # When set, only these apps are reported.
    only_apps: tuple[str, ...] = ()
    policy_backend: str = "regorus"
    opa_url: str | None = None
    opa_token: str | None = field(default=None, repr=False)
    cache_dir: Path = field(default_factory=default_cache_dir)
    # Server-side settings (environment), never the repo's: a PR cannot raise them.
    limits: RenderLimits = field(default_factory=lambda: RenderLimits.from_env(os.environ))
    budget: PreviewBudget = field(default_factory=lambda: PreviewBudget.from_env(os.environ))
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    # URL patterns naming this repository in Argo CD / Flux sources (server config),
    # used when .sluice.yaml sets no discover.repo_urls.
    repo_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Side:
    sha: str
    root: Path
    config: RepoConfig | None
    config_error: str | None
    # Argo CD / Flux discovery: what it found (notes) and what it could not read (errors).
    notes: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def run_preview(
    repo: str | os.PathLike[str],
    base_ref: str,
    head_ref: str,
    options: PreviewOptions | None = None,
) -> Report:
    """Render, diff, check policy and signatures for ``base_ref..head_ref``."""
    options = options or PreviewOptions()
    git = Git(repo)
    try:
        base_sha, head_sha = git.resolve(base_ref), git.resolve(head_ref)
    except GitError as exc:
        raise PreviewError(str(exc)) from None
    options.cache_dir.mkdir(parents=True, exist_ok=True)
    exports = ExportCache(options.cache_dir / "exports")
    with (
        exports.lease(git, base_sha) as base_root,
        exports.lease(git, head_sha, like=base_sha) as head_root,
    ):
        base = _load_side(git, base_root, base_sha, options.repo_urls)
        head = _load_side(git, head_root, head_sha, options.repo_urls)
        report = Report(base=base_sha, head=head_sha, verdict="pass")
        if base.config is None:
            # Without the base's gate settings there is no trustworthy gate: fail closed.
            report.errors.append(f"base revision: {base.config_error}")
        if head.config is None:
            report.errors.append(f"head revision: {head.config_error}")
        for side, label in ((base, "base revision"), (head, "head revision")):
            report.errors.extend(f"{label}: {error}" for error in side.errors)
        report.notes = list(dict.fromkeys(head.notes or base.notes))
        gate = base.config or RepoConfig()
        report.apps = _preview_apps(git, base, head, gate, options)
        report.errors += budget_errors(report.apps)
    report.signatures = _check_signatures(git, base_sha, head_sha, gate, options)
    report.verdict = overall_verdict(report)
    return report


def repo_apps(
    git: Git, sha: str, cache_dir: Path, repo_urls: tuple[str, ...] = ()
) -> tuple[App, ...]:
    """Every app at ``sha``: declared in .sluice.yaml or discovered from Argo CD / Flux."""
    with ExportCache(cache_dir / "exports").lease(git, sha) as root:
        side = _load_side(git, root, sha, repo_urls)
    return side.config.apps if side.config else ()


def repo_app_names(
    git: Git, sha: str, cache_dir: Path, repo_urls: tuple[str, ...] = ()
) -> list[str]:
    return sorted(app.name for app in repo_apps(git, sha, cache_dir, repo_urls))


def _load_side(git: Git, root: Path, sha: str, repo_urls: tuple[str, ...] = ()) -> _Side:
    raw = git.read_file(sha, REPO_CONFIG_FILE)
    if raw is None:
        # No .sluice.yaml: adopt the repo's Argo CD / Flux apps, if it has any.
        found = discover_apps(root, replace(DISCOVER_EVERYTHING, repo_urls=repo_urls))
        if not found.apps and not found.errors:
            message = f"{REPO_CONFIG_FILE} not found, and no Argo CD or Flux apps were found"
            return _Side(sha, root, None, message)
        notes = (f"{REPO_CONFIG_FILE} not found: {describe(found)}", *found.notes)
        return _Side(
            sha, root, RepoConfig(apps=tuple(found.apps)), None, notes, tuple(found.errors)
        )
    try:
        config = parse_repo_config(raw, REPO_CONFIG_FILE)
    except ConfigError as exc:
        return _Side(sha, root, None, str(exc))
    if config.discover is None:
        return _Side(sha, root, config, None)
    settings = config.discover
    found = discover_apps(root, replace(settings, repo_urls=settings.repo_urls or repo_urls))
    declared = {app.name for app in config.apps}
    errors = [*found.errors]
    errors += [
        f"discovery: app {a.name!r} is also declared in {REPO_CONFIG_FILE}"
        for a in found.apps
        if a.name in declared
    ]
    apps = (*config.apps, *(a for a in found.apps if a.name not in declared))
    notes = (describe(found), *found.notes)
    return _Side(sha, root, replace(config, apps=apps), None, notes, tuple(errors))


def _preview_apps(
    git: Git, base: _Side, head: _Side, gate: RepoConfig, options: PreviewOptions
) -> list[AppReport]:
    base_apps = {a.name: a for a in (base.config.apps if base.config else ())}
    # A head whose config does not parse keeps the base's apps (the error is reported).
    head_config = head.config or base.config
    head_apps = {a.name: a for a in (head_config.apps if head_config else ())}
    names = sorted(base_apps.keys() | head_apps.keys())
    if options.only_apps:
        names = [n for n in names if n in options.only_apps]

    selected = (
        set(names)
        if options.all_apps
        else _affected(git, base, head, base_apps, head_apps, options)
    )
    selected &= set(names)
    if not selected:
        return []

    # Over the app budget: the rest are errors that name themselves (fail closed).
    unbudgeted = sorted(selected)[options.budget.max_apps :]
    selected -= set(unbudgeted)
    secret_key = load_or_create_key(options.cache_dir / "fingerprint.key")
    # A renderer message quoting a Secret value shows its fingerprint (bot.render.messages).
    options = replace(options, limits=replace(options.limits, mask_key=secret_key))
    cache = RenderCache(options.cache_dir / "renders")
    with RenderEngine(cpu_budget_s=options.budget.max_render_cpu_s) as engine:
        render = _Renderer(cache, options, engine)
        base_renders = render.many([base_apps[n] for n in selected if n in base_apps], base.root)
        head_renders = render.many([head_apps[n] for n in selected if n in head_apps], head.root)

    sources = load_policy_sources(git, base.sha, gate.policy.paths)
    # Several engines (each its own process) let policy use the cores kubectl freed.
    engines = 1 if len(selected) < 8 else max(1, min(2, options.workers))
    normal = NormalizedRenders()  # each render normalized once: diff, policy and guard share it
    results = PolicyResults(
        None if options.policy_backend == "opa" else options.cache_dir / "policy",
        options.policy_backend,
        gate.policy.package,
        sources,
    )

    def new_engine() -> PolicyEngine:
        return make_engine(
            options.policy_backend,
            sources,
            package=gate.policy.package,
            opa_url=options.opa_url,
            opa_token=options.opa_token,
        )

    with PolicyPool(new_engine, engines, normal, results) as policy:
        pending = {
            name: policy.submit(head_renders[name], secret_key)
            for name in sorted(selected)
            if name in head_renders and not head_renders[name].error
        }
        # The base too, so each violation can say whether this PR brought it; an app
        # whose render did not change shares the head's evaluation.
        on_base = {
            name: pending[name]
            if same_input(base_renders[name], head_renders[name])
            else policy.submit(base_renders[name], secret_key)
            for name in pending
            if name in base_renders and not base_renders[name].error
        }
        reports = [
            checked_app_report(
                name, base_renders.get(name), head_renders.get(name), secret_key, normal
            )
            for name in sorted(selected)
        ]
        for report in reports:
            if report.name in pending:
                base_policy = on_base[report.name].result() if report.name in on_base else None
                report.policy = mark_new(pending[report.name].result(), base_policy)
        for report in reports:
            sides = (base_renders.get(report.name), head_renders.get(report.name))
            guard_app_report(report, *(s.objects if s else [] for s in sides), secret_key)
    all_apps = {**base_apps, **head_apps}
    reports += [over_budget(name, all_apps, options.budget) for name in unbudgeted]
    return sorted(reports, key=lambda r: r.name)


def _affected(
    git: Git,
    base: _Side,
    head: _Side,
    base_apps: dict[str, App],
    head_apps: dict[str, App],
    options: PreviewOptions,
) -> set[str]:
    changed = git.changed_files(base.sha, head.sha)
    # Apps added, removed or redefined in .sluice.yaml are affected by definition.
    redefined = {
        n for n in base_apps.keys() | head_apps.keys() if base_apps.get(n) != head_apps.get(n)
    }
    # Only the others need their inputs read (10,000 new apps would cost a walk each).
    apps = [a for a in {**base_apps, **head_apps}.values() if a.name not in redefined]
    # v2: builtin plugin configurations' files count as inputs (older memos lack them).
    memo = _InputsMemo(options.cache_dir / "inputs" / f"{base.sha}.v2.json")
    touched = affected_apps(apps, changed, base.root, head.root, inputs_of=memo)
    memo.save()
    return redefined | set(touched) | set(options.extra_apps)


class _InputsMemo:
    """The files each app's render reads at one commit, kept on disk.

    A commit never changes, and most pull requests share their base, so the
    base side of affected-app detection is computed once per base commit.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._dirty = False
        try:
            self._known: dict[str, list[str]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self._known = {}

    def __call__(self, app: App, root: Path) -> set[str]:
        key = hashlib.sha256(repr(app).encode()).hexdigest()
        if key not in self._known:
            self._known[key] = sorted(render_inputs(app, root))
            self._dirty = True
        return set(self._known[key])

    def save(self) -> None:
        if not self._dirty:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Worker threads of one process may save the same base's memo at once.
        tmp = self._path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(self._known))
        os.replace(tmp, self._path)


@dataclass
class _Renderer:
    cache: RenderCache
    options: PreviewOptions
    engine: RenderEngine

    def many(self, apps: Iterable[App], root: Path) -> dict[str, RenderedApp]:
        rendered = render_apps(
            list(apps),
            root,
            limits=self.options.limits,
            cache=self.cache,
            workers=self.options.workers,
            engine=self.engine,
        )
        return {r.app.name: r for r in rendered}


def load_policy_sources(git: Git, sha: str, paths: Iterable[str]) -> dict[str, str]:
    """Every ``*.rego`` (not ``*_test.rego``) under ``paths`` at ``sha``."""
    sources: dict[str, str] = {}
    for path in paths:
        prefix = path.strip("/")
        for entry in git.tree(sha, prefix):
            name = entry.path
            if (
                entry.kind == "blob"
                and not entry.is_symlink
                and name.endswith(POLICY_SUFFIX)
                and not name.endswith(POLICY_TEST_SUFFIX)
            ):
                blob = git.read_file(sha, name)
                if blob is not None:
                    sources[name] = blob.decode("utf-8", errors="replace")
    return sources


def _check_signatures(
    git: Git, base_sha: str, head_sha: str, gate: RepoConfig, options: PreviewOptions
):
    keys = TrustedKeys.load(options.keys_dir) if options.keys_dir else TrustedKeys.empty()
    with SignatureVerifier(keys, cache_dir=options.cache_dir / "signatures") as verifier:
        result = verifier.verify(git, base_sha, head_sha, gate.signatures.mode)
    bad = [c.sha for c in result.commits if c.status != "valid"]
    if bad:
        described = _describe_commits(git, bad)
        result.commits = [
            replace(c, subject=described[c.sha][0], author=described[c.sha][1])
            if c.sha in described
            else c
            for c in result.commits
        ]
    return result


def _describe_commits(git: Git, shas: list[str]) -> dict[str, tuple[str, str]]:
    """(subject, "author <email>") per commit, for the report's signature problems."""
    out = git.run("show", "-s", "--format=%H%x00%s%x00%an <%ae>%x00", *shas)
    fields = out.decode("utf-8", errors="replace").split("\x00")
    described = {}
    for i in range(0, len(fields) - 2, 3):
        described[fields[i].strip()] = (fields[i + 1], fields[i + 2])
    return described

"""Affected-app detection over real git exports of a base and a head revision."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from bot.exports import ExportCache
from bot.gitops import Git
from bot.models import App, HelmSettings
from bot.render import affected_apps, glob_regex, render_inputs

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\n"

APPS = (
    App(name="web-prod", path="apps/web/overlays/prod"),
    App(name="web-staging", path="apps/web/overlays/staging"),
    App(name="api", path="charts/api", helm=HelmSettings(values=("/envs/prod/api.yaml",))),
    App(name="static", path="plain/static", watch=("shared/**/*.yaml",)),
)


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


class Repo:
    """A real git repository with a committed base and helpers to commit a head."""

    def __init__(self, path: Path, exports: Path) -> None:
        self.path = path
        self.git = Git(path)
        self.exports = ExportCache(exports)
        self.leases = contextlib.ExitStack()
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
        for key, value in (("user.name", "T"), ("user.email", "t@example.com")):
            subprocess.run(["git", "-C", str(path), "config", key, value], check=True)

    def export(self, sha: str) -> Path:
        """The export of ``sha``, leased until the test ends."""
        return self.leases.enter_context(self.exports.lease(self.git, sha))

    def commit(self, files: dict[str, str | None], message: str) -> str:
        for rel, text in files.items():
            if text is None:
                (self.path / rel).unlink()
            else:
                write(self.path, rel, text)
        subprocess.run(["git", "-C", str(self.path), "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(self.path), "commit", "-q", "-m", message], check=True)
        return self.git.resolve("HEAD")

    def affected(self, base: str, head: str, apps=APPS) -> set[str]:
        changed = self.git.changed_files(base, head)
        base_root = self.export(base)
        head_root = self.export(head)
        return affected_apps(apps, changed, base_root, head_root)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Repo, str]:
    repo = Repo(tmp_path / "repo", tmp_path / "exports")
    base = repo.commit(
        {
            "apps/web/base/kustomization.yaml": "resources: [deploy.yaml]\n",
            "apps/web/base/deploy.yaml": (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
            ),
            "apps/web/base/README.md": "docs\n",
            "apps/web/overlays/prod/kustomization.yaml": (
                "resources: [../../base]\nnamePrefix: prod-\n"
            ),
            "apps/web/overlays/staging/kustomization.yaml": (
                "resources: [../../base]\nnamePrefix: staging-\n"
            ),
            "charts/api/Chart.yaml": "apiVersion: v2\nname: api\nversion: 1.0.0\n",
            "charts/api/values.yaml": "replicas: 1\n",
            "charts/api/templates/cm.yaml": CM.format(name="api"),
            "envs/prod/api.yaml": "replicas: 2\n",
            "envs/staging/api.yaml": "replicas: 1\n",
            "plain/static/cm.yaml": CM.format(name="static"),
            "shared/a/b/data.yaml": "x: 1\n",
            "docs/index.md": "hello\n",
        },
        "base",
    )
    return repo, base


def test_shared_base_change_affects_every_overlay(repo) -> None:
    git_repo, base = repo
    head = git_repo.commit(
        {
            "apps/web/base/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\n"
        },
        "change base",
    )
    assert git_repo.affected(base, head) == {"web-prod", "web-staging"}


def test_file_in_base_dir_that_kustomize_does_not_read_affects_nothing(repo) -> None:
    git_repo, base = repo
    head = git_repo.commit({"apps/web/base/README.md": "more docs\n"}, "docs")
    assert git_repo.affected(base, head) == set()


def test_change_under_one_overlay_affects_only_it(repo) -> None:
    git_repo, base = repo
    head = git_repo.commit(
        {"apps/web/overlays/prod/kustomization.yaml": "resources: [../../base]\nnamePrefix: p-\n"},
        "prod",
    )
    assert git_repo.affected(base, head) == {"web-prod"}


def test_helm_values_file_change_affects_the_chart_app(repo) -> None:
    git_repo, base = repo
    head = git_repo.commit({"envs/prod/api.yaml": "replicas: 5\n"}, "scale")
    assert git_repo.affected(base, head) == {"api"}


def test_values_file_not_used_by_any_app_affects_nothing(repo) -> None:
    git_repo, base = repo
    head = git_repo.commit({"envs/staging/api.yaml": "replicas: 3\n", "docs/index.md": "x\n"}, "x")
    assert git_repo.affected(base, head) == set()


def test_watch_glob_affects_the_app(repo) -> None:
    git_repo, base = repo
    head = git_repo.commit({"shared/a/b/data.yaml": "x: 2\n"}, "shared")
    assert git_repo.affected(base, head) == {"static"}
    other = git_repo.commit({"shared/a/b/notes.txt": "not yaml\n"}, "notes")
    assert git_repo.affected(head, other) == set()


def test_file_added_to_a_kustomization_on_head_is_found(repo) -> None:
    git_repo, base = repo
    head = git_repo.commit(
        {
            "apps/extra/cm.yaml": CM.format(name="extra"),
            "apps/web/base/kustomization.yaml": "resources: [deploy.yaml, ../../extra/cm.yaml]\n",
        },
        "add",
    )
    # A new file only the head reads is reached through a changed kustomization that the
    # base reads too: the real change set finds both apps through the shared base.
    assert git_repo.affected(base, head) == {"web-prod", "web-staging"}
    later = git_repo.commit({"apps/extra/cm.yaml": CM.format(name="extra2")}, "edit")
    assert git_repo.affected(head, later) == {"web-prod", "web-staging"}


def test_file_removed_from_head_is_found_through_the_base_side(repo) -> None:
    git_repo, base = repo
    head = git_repo.commit(
        {
            "apps/web/base/kustomization.yaml": "resources: []\n",
            "apps/web/base/deploy.yaml": None,
        },
        "remove",
    )
    changed = ["apps/web/base/deploy.yaml"]
    roots = (git_repo.export(base), git_repo.export(head))
    assert affected_apps(APPS, changed, *roots) == {"web-prod", "web-staging"}


def test_app_that_exists_on_one_side_only_is_affected(repo) -> None:
    git_repo, base = repo
    head = git_repo.commit({"apps/new/cm.yaml": CM.format(name="new")}, "new app")
    apps = (*APPS, App(name="new", path="apps/new"), App(name="gone", path="apps/nowhere"))
    roots = (git_repo.export(base), git_repo.export(head))
    assert affected_apps(apps, [], *roots) == {"new"}
    assert affected_apps(apps, [], None, roots[1]) == {a.name for a in APPS} | {"new"}


def test_app_whose_inputs_cannot_be_determined_is_affected(repo) -> None:
    git_repo, base = repo
    head = git_repo.commit(
        {"apps/web/overlays/prod/kustomization.yaml": "resources: [https://example.com/x]\n"},
        "remote",
    )
    # Even a change elsewhere marks it: its render cannot be trusted, so fail closed.
    later = git_repo.commit({"docs/index.md": "x\n"}, "docs")
    assert git_repo.affected(head, later) == {"web-prod"}


def test_app_with_an_escaping_path_is_affected_and_never_probed(repo, tmp_path: Path) -> None:
    git_repo, base = repo
    root = git_repo.export(base)
    (tmp_path / "outside").mkdir()
    escaping = App(name="esc", path="../../outside")
    assert affected_apps([escaping], [], root, root) == {"esc"}


def test_render_inputs_of_an_overlay(repo) -> None:
    git_repo, base = repo
    root = git_repo.export(base)
    assert render_inputs(APPS[0], root) == {
        "apps/web/overlays/prod/kustomization.yaml",
        "apps/web/base/kustomization.yaml",
        "apps/web/base/deploy.yaml",
    }


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("charts/common/**", "charts/common/templates/a.yaml", True),
        ("charts/common/**", "charts/commonx/a.yaml", False),
        ("charts/common", "charts/common/templates/a.yaml", True),
        ("**/*.yaml", "a/b/c.yaml", True),
        ("**/*.yaml", "c.yaml", True),
        ("shared/*.yaml", "shared/a/b.yaml", False),
        ("shared/**/b.yaml", "shared/b.yaml", True),
        ("env?/x", "env1/x", True),
        ("env[!0-9]/x", "env1/x", False),
    ],
)
def test_watch_globs(pattern: str, path: str, expected: bool) -> None:
    app = App(name="w", path="elsewhere", watch=(pattern,))
    assert (affected_apps([app], [path], None, None) == {"w"}) is expected


def test_glob_regex_keeps_single_star_within_a_directory() -> None:
    assert glob_regex("apps/*/values.yaml").fullmatch("apps/web/values.yaml")
    assert not glob_regex("apps/*/values.yaml").fullmatch("apps/web/prod/values.yaml")

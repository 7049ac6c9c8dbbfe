"""The one export (committed bytes, no attributes) and the LRU-bounded export and render caches."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bot.cachesize import CacheSizeError, parse_size
from bot.exports import ExportCache
from bot.gitops import Git
from bot.models import App
from bot.render import RenderCache, RenderEngine, render_app

KIB = 1024


class Repo:
    def __init__(self, path: Path) -> None:
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
        self.path = path
        self.git = Git(path)

    def commit(self, files: dict[str, bytes]) -> str:
        for rel, data in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        subprocess.run(["git", "-C", str(self.path), "add", "-A"], check=True)
        subprocess.run(
            ["git", "-C", str(self.path), "commit", "-q", "--allow-empty", "-m", "c"], check=True
        )
        return self.git.resolve("HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


ATTRIBUTES = b"*.yaml export-subst text eol=crlf\nignored.yaml export-ignore\n"
SUBST = b"kind: ConfigMap\n# $Format:%H%n---$\n"


def test_export_writes_committed_bytes_whatever_gitattributes_say(repo: Repo, tmp_path: Path):
    sha = repo.commit(
        {".gitattributes": ATTRIBUTES, "a.yaml": SUBST, "ignored.yaml": b"kept: true\n"}
    )
    os.symlink("a.yaml", repo.path / "link.yaml")
    (repo.path / "run.sh").write_bytes(b"#!/bin/sh\n")
    (repo.path / "run.sh").chmod(0o755)
    head = repo.commit({})

    with ExportCache(tmp_path / "exports").lease(repo.git, head, like=sha) as derived:
        assert (derived / "a.yaml").read_bytes() == SUBST
        assert (derived / "ignored.yaml").read_bytes() == b"kept: true\n"
        assert os.readlink(derived / "link.yaml") == "a.yaml"
        assert os.access(derived / "run.sh", os.X_OK)
        derived_files = sorted(p.name for p in derived.iterdir())
    with ExportCache(tmp_path / "fresh").lease(repo.git, head) as fresh:
        assert sorted(p.name for p in fresh.iterdir()) == derived_files
        assert (fresh / "a.yaml").read_bytes() == SUBST


def test_commits_with_the_same_tree_share_one_entry(repo: Repo, tmp_path: Path) -> None:
    first = repo.commit({"a.yaml": b"x: 1\n"})
    second = repo.commit({})  # an empty commit: same tree
    cache = ExportCache(tmp_path / "exports")
    with cache.lease(repo.git, first) as one, cache.lease(repo.git, second) as two:
        assert one == two
        assert one.name == f"raw1-{repo.git.tree_id(first)}"


def test_an_export_in_the_old_format_is_never_served_and_is_cleared(repo: Repo, tmp_path: Path):
    sha = repo.commit({"a.yaml": b"x: 1\n"})
    stale = tmp_path / "exports" / sha  # the old layout: named by commit, made by git archive
    stale.mkdir(parents=True)
    (stale / "a.yaml").write_bytes(b"x: smuggled\n")
    cache = ExportCache(tmp_path / "exports")
    leftover = tmp_path / "exports" / ".render-crashed"  # a killed render's scratch tree
    leftover.mkdir()
    os.utime(leftover, (0, 0))
    with cache.lease(repo.git, sha) as root:
        assert (root / "a.yaml").read_bytes() == b"x: 1\n"
    assert not stale.exists() and not leftover.exists()


def test_many_pushes_stay_under_the_bound(repo: Repo, tmp_path: Path) -> None:
    cache = ExportCache(tmp_path / "exports", 700 * KIB)
    previous = None
    for push in range(20):
        sha = repo.commit({"big.bin": os.urandom(200 * KIB), "n.txt": str(push).encode()})
        with cache.lease(repo.git, sha, like=previous) as root:
            assert (root / "n.txt").read_text() == str(push)
        previous = sha
        assert cache.usage() <= 700 * KIB
    on_disk = [p for p in (tmp_path / "exports").iterdir() if not p.name.startswith(".")]
    assert 1 <= len(on_disk) <= 3


def test_an_export_in_use_is_never_evicted(repo: Repo, tmp_path: Path) -> None:
    cache = ExportCache(tmp_path / "exports", 300 * KIB)
    held = repo.commit({"big.bin": os.urandom(200 * KIB)})
    with cache.lease(repo.git, held) as root:
        for _ in range(5):
            with cache.lease(repo.git, repo.commit({"big.bin": os.urandom(200 * KIB)})):
                pass
            assert (root / "big.bin").stat().st_size == 200 * KIB
    with cache.lease(repo.git, repo.commit({"big.bin": os.urandom(200 * KIB)})):
        pass
    assert not root.exists()  # released, least recently used: the next export evicts it
    assert cache.usage() <= 300 * KIB


def test_size_settings_parse_units_and_refuse_garbage() -> None:
    assert parse_size("512Mi", "X") == 512 * 1024**2
    assert parse_size("2G", "X") == 2 * 1024**3
    assert parse_size("1000", "X") == 1000
    with pytest.raises(CacheSizeError, match="SLUICE_EXPORT_CACHE_MAX_BYTES: 'lots' is not a size"):
        parse_size("lots", "SLUICE_EXPORT_CACHE_MAX_BYTES")


def test_render_cache_stays_under_its_bound_and_keeps_the_latest(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path / "renders", 40 * KIB)
    engine = RenderEngine()
    app = App(name="cfg", path="cfg")
    for push in range(30):
        export = tmp_path / f"export-{push}"
        (export / "cfg").mkdir(parents=True)
        (export / "cfg/cm.yaml").write_text(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n"
            f"data: {{push: '{push}', pad: {'x' * 10 * KIB}}}\n"
        )
        assert render_app(app, export, cache=cache, engine=engine).error is None
        assert cache.usage() <= 40 * KIB
    renders = engine.renders
    latest = render_app(app, tmp_path / "export-29", cache=cache, engine=engine)
    assert latest.objects[0]["data"]["push"] == "29"
    assert engine.renders == renders  # served from the cache


def test_in_memory_render_cache_is_bounded_too(tmp_path: Path) -> None:
    cache = RenderCache(None, 3 * KIB)
    for push in range(10):
        cache.get_or_render(str(push), lambda: [{"pad": "x" * KIB}])
    assert cache.usage() <= 3 * KIB
    assert cache.get_or_render("9", lambda: []) == [{"pad": "x" * KIB}]


def test_submodules_are_left_out_and_everything_else_exported(repo: Repo, tmp_path: Path):
    sha = repo.commit({"a.yaml": b"x: 1\n"})
    git = ["git", "-C", str(repo.path)]
    subprocess.run(
        [*git, "update-index", "--add", "--cacheinfo", f"160000,{sha},vendor/sub"], check=True
    )
    subprocess.run([*git, "commit", "-q", "-m", "submodule"], check=True)
    head = repo.git.resolve("HEAD")
    with ExportCache(tmp_path / "exports").lease(repo.git, head) as root:
        assert sorted(p.name for p in root.iterdir()) == ["a.yaml"]

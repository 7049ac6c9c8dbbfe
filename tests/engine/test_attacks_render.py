"""Hostile pull requests against the renderers: each test runs the attack for real.

Every attack is first shown to work against the real ``kubectl kustomize`` (or real
git), so the test cannot pass because the attack was a dud; then Sluice must refuse
it or render what will really deploy.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.diff import fingerprint, load_or_create_key
from bot.exports import ExportCache
from bot.gitops import Git
from bot.models import App
from bot.preview import PreviewOptions, run_preview
from bot.render import RenderEngine, RenderLimits, render_app
from bot.render.kustomize import find_kubectl
from bot.render.limits import RenderError
from bot.render.tree import ExportTree

EVIL = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: evil-marker}\n"
BENIGN = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: benign}\n"


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def kubectl_kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    """The real kubectl, with the load restrictor Sluice uses, but none of Sluice's checks."""
    return subprocess.run(
        [find_kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsRootOnly", directory],
        capture_output=True,
        text=True,
        timeout=60,
    )


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).hits.append(self.path)
        body = EVIL.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 that records every request it answers."""
    handler = type("Handler", (_Counter,), {"hits": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    finally:
        server.shutdown()
        server.server_close()


# (name, kustomization text, extra files, key Sluice must name). Each variant makes
# the real kubectl read something through a key spelled other than Kustomize's own.
KEY_VARIANTS = [
    ("capitalised", "Resources: [evil.yaml]\n", {"evil.yaml": EVIL}, "Resources"),
    ("upper", "RESOURCES: [evil.yaml]\n", {"evil.yaml": EVIL}, "RESOURCES"),
    ("long-s fold", "re\u017fources: [evil.yaml]\n", {"evil.yaml": EVIL}, "re\u017fources"),
    (
        "after the real key",
        "resources: [benign.yaml]\nre\u017fources: [evil.yaml]\n",
        {"evil.yaml": EVIL, "benign.yaml": BENIGN},
        "re\u017fources",
    ),
    ("merge key", "<<: {Resources: [evil.yaml]}\n", {"evil.yaml": EVIL}, "Resources"),
    (
        "nested generator files",
        "configMapGenerator:\n- name: evil-marker\n  Files: [token.txt]\n",
        {"token.txt": "stolen\n"},
        "Files",
    ),
    (
        "kelvin sign in a patch target",
        "resources: [cm.yaml]\npatches:\n- path: p.json\n  target: {\u212aind: ConfigMap}\n",
        {
            "cm.yaml": BENIGN,
            "p.json": '[{"op": "replace", "path": "/metadata/name", "value": "evil-marker"}]',
        },
        "\u212aind",
    ),
    (
        "builtin generator config",
        "generators: [gen.yaml]\n",
        {
            "gen.yaml": "apiVersion: builtin\nkind: ConfigMapGenerator\n"
            "metadata: {name: evil-marker}\nFiles: [token.txt]\n",
            "token.txt": "stolen\n",
        },
        "Files",
    ),
]


@pytest.mark.parametrize(
    ("text", "files", "key"),
    [v[1:] for v in KEY_VARIANTS],
    ids=[v[0] for v in KEY_VARIANTS],
)
def test_kustomization_key_in_another_spelling_is_refused(
    tmp_path: Path, text: str, files: dict[str, str], key: str
) -> None:
    root = tmp_path / "export"
    app_dir = write(root, "apps/x/kustomization.yaml", text).parent
    for rel, content in files.items():
        write(app_dir, rel, content)

    real = kubectl_kustomize(app_dir)
    assert real.returncode == 0, real.stderr
    assert "evil-marker" in real.stdout  # kubectl acts on the key

    result = render_app(App(name="x", path="apps/x"), root)

    assert result.objects == []
    assert result.error is not None
    assert result.error.startswith(("apps/x/kustomization.yaml: ", "apps/x/gen.yaml: "))
    assert f"key {key!r}" in result.error
    assert "exact" in result.error


def test_kustomization_outside_the_export_through_a_folded_key_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "kustomization.yaml", "resources: [cm.yaml]\n")
    write(outside, "cm.yaml", EVIL)
    root = tmp_path / "export"
    app_dir = write(root, "apps/x/kustomization.yaml", "Resources: [../../../outside]\n").parent

    real = kubectl_kustomize(app_dir)
    assert "evil-marker" in real.stdout, real.stderr  # kubectl renders the outside directory

    result = render_app(App(name="x", path="apps/x"), root)
    assert result.objects == []
    assert result.error is not None and "key 'Resources'" in result.error


def test_remote_url_through_a_folded_key_is_never_fetched(
    tmp_path: Path, web_server: tuple[str, list[str]]
) -> None:
    url, hits = web_server
    root = tmp_path / "export"
    text = f"RESOURCES: ['{url}/leak.yaml']\n"
    app_dir = write(root, "apps/x/kustomization.yaml", text).parent

    real = kubectl_kustomize(app_dir)
    assert hits == ["/leak.yaml"] and "evil-marker" in real.stdout, real.stderr
    hits.clear()

    result = render_app(App(name="x", path="apps/x"), root)
    assert result.error is not None and "key 'RESOURCES'" in result.error
    assert hits == []


def test_unknown_kustomization_key_is_refused_with_its_path(tmp_path: Path) -> None:
    root = tmp_path / "export"
    write(root, "apps/x/kustomization.yaml", "images:\n- name: web\n  newtag: latest\n")
    result = render_app(App(name="x", path="apps/x"), root)
    assert result.error == (
        "apps/x/kustomization.yaml: images[0]: key 'newtag' is not the exact field name "
        "'newTag'; Kustomize would read it as 'newTag' (it ignores case and Unicode folding), "
        "so Sluice accepts only the exact spelling"
    )


# -- render cache poisoning: a benign push is cached, then a malicious one follows


class GitRepo:
    def __init__(self, path: Path) -> None:
        self.path = path
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
        self.git = Git(path)

    def commit(self, files: dict[str, str]) -> str:
        for rel, text in files.items():
            write(self.path, rel, text)
        subprocess.run(["git", "-C", str(self.path), "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(self.path), "commit", "-q", "-m", "c"], check=True)
        return self.git.resolve("HEAD")


DEPLOY = (
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
    "spec:\n  template:\n    spec:\n      containers: [{name: web, image: 'nginx:1.27'}]\n"
)
PRIVILEGED_PATCH = (
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n"
    "spec:\n  template:\n    spec:\n      containers:\n      - name: web\n"
    "        image: nginx:{tag}\n        securityContext: {{privileged: {privileged}}}\n"
)
CHART_TEMPLATE = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: conf}\n"
    'data: {conf: {{ .Files.Get "files/conf.txt" | quote }}}\n'
)

SAFE_PATCH = PRIVILEGED_PATCH.format(tag="1.27", privileged="false")
EVIL_PATCH = PRIVILEGED_PATCH.format(tag="latest", privileged="true")
WEB_APP = {".sluice.yaml": "apps:\n- {name: web, path: apps/web}\n", "apps/web/deploy.yaml": DEPLOY}

# (name, files of the benign push, the one file the malicious push changes,
#  its malicious content, what the fresh render must show)
POISONING = [
    (
        "builtin patch transformer file",
        {
            **WEB_APP,
            "apps/web/kustomization.yaml": "resources: [deploy.yaml]\ntransformers: [t.yaml]\n",
            "apps/web/t.yaml": "apiVersion: builtin\nkind: PatchTransformer\n"
            "metadata: {name: p}\npath: patch.yaml\n",
            "apps/web/patch.yaml": SAFE_PATCH,
        },
        "apps/web/patch.yaml",
        EVIL_PATCH,
        "privileged: true",
    ),
    (
        "component patch file",
        {
            **WEB_APP,
            "apps/web/kustomization.yaml": "resources: [deploy.yaml]\ncomponents: [../comp]\n",
            "apps/comp/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\n"
            "kind: Component\npatches:\n- path: patch.yaml\n",
            "apps/comp/patch.yaml": SAFE_PATCH,
        },
        "apps/comp/patch.yaml",
        EVIL_PATCH,
        "privileged: true",
    ),
    (
        "configMapGenerator file",
        {
            **WEB_APP,
            "apps/web/kustomization.yaml": "configMapGenerator:\n- name: conf\n"
            "  files: [conf/app.conf]\n",
            "apps/web/conf/app.conf": "mode=safe\n",
        },
        "apps/web/conf/app.conf",
        "mode=debug-open\n",
        "mode=debug-open",
    ),
    (
        "helm .Files.Get",
        {
            ".sluice.yaml": "apps:\n- {name: chart, path: charts/c}\n",
            "charts/c/Chart.yaml": "apiVersion: v2\nname: c\nversion: 1.0.0\n",
            "charts/c/templates/cm.yaml": CHART_TEMPLATE,
            "charts/c/files/conf.txt": "safe",
        },
        "charts/c/files/conf.txt",
        "debug-open",
        "debug-open",
    ),
]


@pytest.mark.parametrize(
    ("files", "target", "malicious", "shows"),
    [p[1:] for p in POISONING],
    ids=[p[0] for p in POISONING],
)
def test_second_push_is_never_served_the_first_push_render(
    tmp_path: Path, files: dict[str, str], target: str, malicious: str, shows: str
) -> None:
    repo = GitRepo(tmp_path / "repo")
    base = repo.commit({"README.md": "gitops\n", ".sluice.yaml": "apps: []\n"})
    benign = repo.commit(files)
    options = PreviewOptions(cache_dir=tmp_path / "cache", workers=1)
    first = run_preview(repo.path, base, benign, options)
    assert [a.status for a in first.apps] == ["added"], first.apps[0].error
    assert shows not in "".join(c.diff for c in first.apps[0].changes)

    malicious_head = repo.commit({target: malicious})
    second = run_preview(repo.path, base, malicious_head, options)

    (app,) = second.apps
    assert app.status == "added", app.error
    # The fresh render, not the cached benign one.
    assert shows in "".join(c.diff for c in app.changes)


def test_render_sees_only_the_files_its_cache_key_hashes(tmp_path: Path) -> None:
    """Defence in depth: a file the static walk did not list cannot be read at all."""
    root = tmp_path / "export"
    write(root, "apps/x/kustomization.yaml", "resources: [cm.yaml]\n")
    write(root, "apps/x/cm.yaml", BENIGN)
    write(root, "apps/x/unlisted.yaml", EVIL)
    tree = ExportTree(root)
    with tree.confined({"apps/x/kustomization.yaml", "apps/x/cm.yaml"}) as only:
        assert sorted(str(p.relative_to(only.root)) for p in only.root.rglob("*.yaml")) == [
            "apps/x/cm.yaml",
            "apps/x/kustomization.yaml",
        ]
        with pytest.raises(RenderError):
            only.read_bytes("apps/x/unlisted.yaml", RenderLimits())
    assert not only.root.exists()


# -- one export: what is previewed is what deploys

SUBST_CM = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n"
    "data: {mode: safe}\n"
    "# $Format:%n---%napiVersion: v1%nkind: ConfigMap%nmetadata: {name: smuggled}%n$\n"
)


def test_gitattributes_cannot_make_the_deployed_render_differ(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    base = repo.commit({".sluice.yaml": "apps:\n- {name: web, path: apps/web}\n"})
    head = repo.commit(
        {
            "apps/web/cm.yaml": SUBST_CM,
            "apps/web/secret-policy.yaml": "apiVersion: v1\nkind: ConfigMap\n"
            "metadata: {name: reviewed}\n",
            ".gitattributes": "*.yaml export-subst\napps/web/secret-policy.yaml export-ignore\n",
        }
    )
    # The attack is real: git archive expands $Format and drops export-ignore files.
    archived = subprocess.run(
        ["git", "-C", str(repo.path), "archive", "--format=tar", head, "apps/web"],
        capture_output=True,
        check=True,
    ).stdout
    assert b"name: smuggled" in archived and b"secret-policy" not in archived

    app = App(name="web", path="apps/web")
    options = PreviewOptions(cache_dir=tmp_path / "cache", workers=1)
    previewed = run_preview(repo.path, base, head, options).apps[0].objects
    # Merge gate and puller: a fresh cache, export made without a base to derive from.
    with ExportCache(tmp_path / "deploy-exports").lease(repo.git, head) as root:
        deployed = render_app(app, root, engine=RenderEngine()).objects
    cli = subprocess.run(
        [sys.executable, "-m", "bot", "render", "--repo", str(repo.path), "--ref", head],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SLUICE_CACHE_DIR": str(tmp_path / "cli-cache")},
    )
    assert cli.returncode == 0, cli.stderr

    names = sorted(o["metadata"]["name"] for o in deployed)
    assert names == ["reviewed", "web"]
    assert sorted(o["metadata"]["name"] for o in previewed) == names
    assert "smuggled" not in cli.stdout and "name: reviewed" in cli.stdout


# -- error clean-up stays linear on hostile names


@pytest.mark.timeout(60)
def test_kubectl_error_with_a_60k_character_nested_name_cleans_quickly(tmp_path: Path) -> None:
    name = "{" * 30_000 + "}" * 30_000
    root = tmp_path / "export"
    write(root, "apps/x/kustomization.yaml", "resources: [a.yaml, b.yaml]\n")
    for rel in ("a.yaml", "b.yaml"):
        write(
            root,
            f"apps/x/{rel}",
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: '{name}'}}\n",
        )
    real = kubectl_kustomize(root / "apps/x")
    assert name in real.stderr  # kubectl quotes the whole name

    started = time.monotonic()
    result = render_app(App(name="x", path="apps/x"), root)
    elapsed = time.monotonic() - started

    assert result.error is not None
    assert result.error.startswith("apps/x: kustomize failed: ")
    assert "already registered id" in result.error
    assert len(result.error) <= 400 and "{" not in result.error
    assert elapsed < 10, f"took {elapsed:.1f}s"


# -- Secret values outside Secrets reach no report text

PASSWORD = "hunter2-correct-horse"
SECRET = (
    f"apiVersion: v1\nkind: Secret\nmetadata: {{name: db}}\nstringData: {{password: {PASSWORD}}}\n"
)
CHART = {
    "charts/db/Chart.yaml": "apiVersion: v2\nname: db\nversion: 1.0.0\n",
    "charts/db/values.yaml": f"password: {PASSWORD}\n",
    "charts/db/templates/secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\n"
    "stringData: {password: {{ .Values.password | quote }}}\n",
}


def preview_leak(tmp_path: Path, base_files: dict[str, str], head_files: dict[str, str]):
    """(the app's report, the fingerprint the Secret diff shows for PASSWORD)."""
    repo = GitRepo(tmp_path / "repo")
    base = repo.commit(base_files)
    head = repo.commit(head_files)
    options = PreviewOptions(cache_dir=tmp_path / "cache", workers=1)
    report = run_preview(repo.path, base, head, options)
    key = load_or_create_key(options.cache_dir / "fingerprint.key")
    (app,) = report.apps
    text = json.dumps(report.to_dict())
    assert PASSWORD not in text
    assert base64.b64encode(PASSWORD.encode()).decode() not in text
    return app, f"<secret sha:{fingerprint(PASSWORD.encode(), key)}>"


def test_replacement_copying_a_secret_into_a_configmap_is_masked_and_warned(tmp_path: Path):
    kustomization = (
        "resources: [secret.yaml, cm.yaml]\nreplacements:\n"
        "- source: {kind: Secret, name: db, fieldPath: stringData.password}\n"
        "  targets:\n  - select: {kind: ConfigMap, name: settings}\n"
        "    fieldPaths: [data.copied]\n"
    )
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {copied: x}\n"
    app_dir = write(tmp_path / "probe", "kustomization.yaml", kustomization).parent
    write(app_dir, "secret.yaml", SECRET)
    write(app_dir, "cm.yaml", cm)
    assert f"copied: {PASSWORD}" in kubectl_kustomize(app_dir).stdout  # the copy is real

    config = ".sluice.yaml"
    base = {
        config: "apps:\n- {name: db, path: apps/db}\n",
        "apps/db/kustomization.yaml": "resources: [secret.yaml]\n",
        "apps/db/secret.yaml": SECRET,
    }
    head = {"apps/db/kustomization.yaml": kustomization, "apps/db/cm.yaml": cm}
    app, shown = preview_leak(tmp_path, base, head)

    (change,) = [c for c in app.changes if c.kind == "ConfigMap"]
    assert f"copied: {shown}" in change.diff
    (warning,) = [v for v in app.policy.violations if v.rule == "secret_value_in_plain_object"]
    assert warning.severity == "warn" and warning.name == "settings" and shown in warning.msg
    assert app.policy.verdict == "warn"


@pytest.mark.parametrize(
    "template",
    [
        '{{ fail (printf "password %s is too weak" .Values.password) }}',
        '{{ required (printf "user missing (password %s)" .Values.password) .Values.user }}',
    ],
    ids=["fail", "required"],
)
def test_helm_message_quoting_a_secret_value_shows_its_fingerprint(
    tmp_path: Path, template: str
) -> None:
    base = {".sluice.yaml": "apps:\n- {name: db, path: charts/db}\n", **CHART}
    head = {"charts/db/templates/check.yaml": template + "\n"}
    app, shown = preview_leak(tmp_path, base, head)
    assert app.status == "error"
    assert shown in app.error  # the value Helm quoted, as the Secret diff would show it


def test_kubectl_echoing_a_secret_generator_literal_shows_a_fingerprint(tmp_path: Path) -> None:
    kustomization = f"secretGenerator:\n- name: db\n  literals: ['={PASSWORD}']\n"
    probe = write(tmp_path / "probe", "kustomization.yaml", kustomization).parent
    assert PASSWORD in kubectl_kustomize(probe).stderr  # kubectl echoes the literal

    base = {
        ".sluice.yaml": "apps:\n- {name: db, path: apps/db}\n",
        "apps/db/kustomization.yaml": "resources: [secret.yaml]\n",
        "apps/db/secret.yaml": SECRET,
    }
    app, _shown = preview_leak(tmp_path, base, {"apps/db/kustomization.yaml": kustomization})
    assert app.status == "error"
    assert app.error.startswith("apps/db: kustomize failed: ") and "<secret sha:" in app.error


def test_short_values_are_not_masked_everywhere(tmp_path: Path) -> None:
    """A Secret value under the minimum length (6) does not blank out every "true"."""
    short = "apiVersion: v1\nkind: Secret\nmetadata: {name: flags}\nstringData: {on: 'true'}\n"
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {enabled: 'true'}\n"
    repo = GitRepo(tmp_path / "repo")
    base = repo.commit(
        {".sluice.yaml": "apps:\n- {name: x, path: apps/x}\n", "apps/x/s.yaml": short}
    )
    head = repo.commit({"apps/x/cm.yaml": cm})
    (app,) = run_preview(repo.path, base, head, PreviewOptions(cache_dir=tmp_path / "c")).apps
    (change,) = app.changes
    assert "enabled: 'true'" in change.diff
    assert not [v for v in app.policy.violations if v.rule == "secret_value_in_plain_object"]


@pytest.mark.timeout(60)
def test_helm_error_with_a_60k_character_dump_cleans_quickly(tmp_path: Path) -> None:
    root = tmp_path / "export"
    write(root, "charts/c/Chart.yaml", "apiVersion: v2\nname: c\nversion: 1.0.0\n")
    write(root, "charts/c/templates/x.yaml", '{{ fail (repeat 20000 "map[{") }}\n')
    started = time.monotonic()
    result = render_app(App(name="c", path="charts/c"), root)
    elapsed = time.monotonic() - started
    assert result.error is not None and result.error.startswith("charts/c: helm: ")
    assert len(result.error) <= 420
    assert elapsed < 10, f"took {elapsed:.1f}s"

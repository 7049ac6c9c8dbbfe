"""What discovery shares: the export, the settings, the repo URL rule, the notes it collects."""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from bot.config.repo import DiscoverSettings, safe_repo_path
from bot.render.limits import RenderError
from bot.render.tree import ExportTree


def canonical(value: Any) -> str:
    """A stable JSON text for a value kept in an App (hashable, comparable, cache-keyable)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def normalize_url(url: str) -> str:
    """``git@host:org/repo.git``, ``ssh://git@host/org/repo`` and ``https://host/org/repo/``
    all become ``host/org/repo``."""
    text = url.strip()
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text, flags=re.IGNORECASE)
    text = re.sub(r"^[^@/]+@", "", text)
    text = re.sub(r"^([^/:]+):(?!\d+/)", r"\1/", text)
    text = re.sub(r"^([^/:]+):\d+/", r"\1/", text)
    text = text.rstrip("/")
    return (text[:-4] if text.endswith(".git") else text).lower()


@dataclass
class Context:
    tree: ExportTree
    settings: DiscoverSettings
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Object indexes filled by the scan: (kind, namespace, name) -> (file, object).
    objects: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)
    assumed: set[str] = field(default_factory=set)

    def is_local(self, url: str, path: str | None) -> bool:
        """Whether ``url`` is this repository (``discover.repo_urls``), or, with none
        configured, whether ``path`` exists here (which is then noted as an assumption)."""
        patterns = self.settings.repo_urls
        if patterns:
            target = normalize_url(url)
            return any(fnmatch.fnmatchcase(target, normalize_url(p)) for p in patterns)
        if path is None:
            return False
        rel = repo_dir(path)
        if rel is None:
            return False
        try:
            exists = self.tree.is_dir(rel, rel or ".")
        except RenderError:
            return False
        if exists and url not in self.assumed:
            self.assumed.add(url)
            self.notes.append(
                f"assumed {url} is this repository because {rel or '.'} exists here; "
                "set discover.repo_urls in .sluice.yaml to say so explicitly"
            )
        return exists

    def find(self, kind: str, namespace: str, name: str) -> tuple[str, dict[str, Any]] | None:
        return self.objects.get((kind, namespace, name))


def repo_dir(path: str) -> str | None:
    """A source path (``./apps/x``, ``apps/x/``, ``/apps/x``) as a repo path, None if unsafe."""
    text = path.strip()
    if text.startswith("/"):
        text = text.lstrip("/")
    return safe_repo_path(posixpath.normpath(text) if text else ".")

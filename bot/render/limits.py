"""Bounds every render must stay within, and the one error type the layer raises."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from bot.config.repo import ConfigError

MIB = 1024 * 1024
# Marks an app that was not rendered because its preview's budget ran out.
NOT_RENDERED = "not rendered (preview budget):"


class RenderError(Exception):
    """An app cannot be rendered; the message names the file and the problem.

    Messages never quote file contents: a manifest may be a Secret.
    """


@dataclass(frozen=True)
class RenderLimits:
    """Resource limits for rendering one app; a breach is a :class:`RenderError`."""

    max_file_bytes: int = 5 * MIB
    # Rendered output (kubectl kustomize / helm) may be larger than any one input.
    max_output_bytes: int = 64 * MIB
    max_objects: int = 10_000
    # Nodes a YAML stream may expand to once aliases are followed (billion laughs).
    max_yaml_nodes: int = 1_000_000
    # Nesting depth of one document: later stages walk objects recursively.
    max_yaml_depth: int = 100
    timeout_s: float = 60.0
    # A renderer child process: its writable memory (RLIMIT_DATA) and CPU seconds.
    max_memory_bytes: int = 320 * MIB
    cpu_s: float = 30.0

    # Not a limit: the installation's fingerprint key (bot.diff.secrets), so a renderer
    # message that quotes a Secret value shows the fingerprint the Secret diff shows.
    # Never passed to a renderer; without it such values read "***".
    mask_key: bytes = field(default=b"", repr=False, compare=False)

    def cache_token(self) -> str:
        return (
            f"{self.max_file_bytes}:{self.max_output_bytes}:{self.max_objects}:"
            f"{self.max_yaml_nodes}:{self.max_yaml_depth}"
        )

    def for_output(self) -> RenderLimits:
        """Limits for parsing a renderer's output, which may exceed any one input file."""
        return replace(self, max_file_bytes=self.max_output_bytes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RenderLimits:
        """Defaults overridden by the server's environment (never by a repo's config)."""
        default = cls()
        return cls(
            timeout_s=_number(environ, "SLUICE_RENDER_TIMEOUT_S", default.timeout_s),
            cpu_s=_number(environ, "SLUICE_RENDER_CPU_S", default.cpu_s),
            max_memory_bytes=int(
                _number(environ, "SLUICE_RENDER_MEMORY_MIB", default.max_memory_bytes / MIB) * MIB
            ),
        )


@dataclass(frozen=True)
class PreviewBudget:
    """What one preview may spend; over it, the remaining apps are errors (fail closed)."""

    max_apps: int = 500
    # CPU seconds of all renderer processes of one preview together (cache hits are free).
    max_render_cpu_s: float = 600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PreviewBudget:
        default = cls()
        return cls(
            max_apps=int(_number(environ, "SLUICE_PREVIEW_MAX_APPS", default.max_apps)),
            max_render_cpu_s=_number(
                environ, "SLUICE_PREVIEW_RENDER_CPU_S", default.max_render_cpu_s
            ),
        )


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: must be a positive number, got {raw!r}")
    return value

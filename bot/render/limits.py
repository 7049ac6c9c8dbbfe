"""Bounds every render must stay within, and the one error type the layer raises."""

from __future__ import annotations

from dataclasses import dataclass, replace

MIB = 1024 * 1024


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
    timeout_s: float = 60.0
    # A renderer child process: its writable memory (RLIMIT_DATA) and CPU seconds.
    max_memory_bytes: int = 512 * MIB
    cpu_s: float = 30.0

    def cache_token(self) -> str:
        return f"{self.max_file_bytes}:{self.max_output_bytes}:{self.max_objects}:{self.max_yaml_nodes}"

    def for_output(self) -> RenderLimits:
        """Limits for parsing a renderer's output, which may exceed any one input file."""
        return replace(self, max_file_bytes=self.max_output_bytes)

"""Choosing a policy engine: the backend a configuration names, built for a policy set."""

from __future__ import annotations

from bot.policy.engine import (
    BACKENDS,
    EmbeddedEngine,
    PolicyEngine,
    StaticEngine,
    missing_package_error,
    policy_sources,
    validate_package,
)


def make_engine(
    backend: str,
    sources: dict[str, str],
    *,
    package: str = "main",
    opa_url: str | None = None,
    opa_token: str | None = None,
    timeout_s: float = 10.0,
) -> PolicyEngine:
    """An engine for ``sources`` (path → Rego text); ``*_test.rego`` files are left out.

    A policy set that does not compile yields an engine whose every verdict is
    ``error`` with the compile message; an empty policy set always passes.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown policy backend {backend!r}; expected one of {BACKENDS}")
    validate_package(package)
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    if backend == "opa" and not opa_url:
        raise ValueError("the opa policy backend needs opa_url")
    sources = policy_sources(sources)
    if not sources:
        return StaticEngine()
    problem = missing_package_error(sources, package)
    if problem:
        return StaticEngine(problem)
    if backend == "opa":
        from bot.policy.opa import OpaEngine  # late: only the OPA backend needs its client

        return OpaEngine(
            sources, package=package, url=opa_url or "", token=opa_token, timeout_s=timeout_s
        )
    engine = EmbeddedEngine(backend, sources, package=package, timeout_s=timeout_s)
    problem = engine.load_error()
    if problem:
        engine.close()
        return StaticEngine(f"policy compilation failed: {problem}")
    return engine

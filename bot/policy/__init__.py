"""Rego policy gate: engines (regorus, regopy, OPA server), conftest conventions, tests."""

from __future__ import annotations

from bot.policy.engine import BACKENDS, PolicyEngine, policy_sources
from bot.policy.factory import make_engine
from bot.policy.testing import PolicyTestResult, PolicyTestSummary, run_policy_tests

__all__ = [
    "BACKENDS",
    "PolicyEngine",
    "PolicyTestResult",
    "PolicyTestSummary",
    "make_engine",
    "policy_sources",
    "run_policy_tests",
]

"""Sluice: a policy-gated pull-request bot for GitOps on Kubernetes."""

__version__ = "0.1.0"

"""The in-cluster puller (``sluice puller``): ledger → verify → plan → apply → observe.

Its public face: the agent and its config, the applier, the HTTP API, and the
verified-frontier store. Modules, by the decision each makes: ``verify`` (which
revision may run: ledger, anchor, signature chain), ``release`` (plan: render and
policy at the revision), ``deployer`` and ``apply`` (apply, prune, health, record),
``observe``, ``views`` and ``drift`` (drift and self-heal); ``leader``, ``followers`` and
``cluster_state`` for several replicas.
"""

from bot.puller.agent import PullerAgent
from bot.puller.api import create_puller_app
from bot.puller.apply import Applier, ApplyResult
from bot.puller.config import PullerConfig, load_puller_config, parse_puller_config
from bot.puller.frontier import FrontierStore, StateFrontierStore
from bot.puller.history import HistoryStore, LastResult
from bot.puller.server import build_agent
from bot.puller.verify import ChainVerifier, Refused

__all__ = [
    "Applier",
    "ApplyResult",
    "ChainVerifier",
    "FrontierStore",
    "HistoryStore",
    "LastResult",
    "PullerAgent",
    "PullerConfig",
    "Refused",
    "StateFrontierStore",
    "build_agent",
    "create_puller_app",
    "load_puller_config",
    "parse_puller_config",
]

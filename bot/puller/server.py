"""``sluice puller``: build the agent from its config, then run the loop and the API.

The API is small and in-cluster only, so werkzeug's threaded server is enough;
the loop runs in its own thread. ``once`` runs one cycle and reports by exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

import kubernetes.client
from werkzeug.serving import make_server

from bot.puller.agent import PullerAgent
from bot.puller.api import create_puller_app
from bot.puller.apply import Applier
from bot.puller.cluster_state import ClusterHistoryStore
from bot.puller.config import PullerConfig, make_api_client
from bot.puller.events import EventReporter
from bot.puller.history import HistoryStore
from bot.puller.inventory import InventoryStore
from bot.puller.leader import LeaderElector, LeaseTimings

log = logging.getLogger(__name__)

FIELD_MANAGER = "sluice"


def build_agent(
    config: PullerConfig,
    *,
    health_poll_s: float = 1.0,
    timings: LeaseTimings | None = None,
    on_lost: Callable[[], None] | None = None,
) -> PullerAgent:
    """The agent with a real Applier on the configured cluster."""
    api_client = make_api_client(config)
    applier = Applier(
        api_client,
        field_manager=FIELD_MANAGER,
        discovery_cache=config.data_dir / "discovery.json",
        max_prune_ratio=config.max_prune_ratio,
        store=InventoryStore(
            api_client, namespace=config.inventory_namespace, field_manager=FIELD_MANAGER
        ),
    )
    version = kubernetes.client.VersionApi(api_client)
    election = config.leader_election
    store: ClusterHistoryStore | None = None
    reporter: EventReporter | None = None
    elector: LeaderElector | None = None
    if election is not None:
        # History, frontier and published status live in the cluster; the outbox stays local.
        store = ClusterHistoryStore(applier.cluster, election.namespace, limit=config.history_limit)
        outbox = HistoryStore(config.data_dir / "puller.db", limit=config.history_limit)
        reporter = EventReporter(outbox, config.events_url, config.api_token)
        elector = LeaderElector(
            applier.cluster,
            namespace=election.namespace,
            name=election.lease_name,
            identity=election.identity,
            url=election.advertise_url,
            timings=timings
            or LeaseTimings(
                election.lease_duration_s, election.renew_deadline_s, election.retry_period_s
            ),
            on_lost=on_lost or _exit_on_lost,
        )
    return PullerAgent(
        config,
        applier,
        store=store,
        reporter=reporter,
        api_probe=lambda: version.get_code(_request_timeout=5),
        health_poll_s=health_poll_s,
        elector=elector,
    )


def _exit_on_lost() -> None:
    """As controller-runtime does: a replica that lost the Lease stops at once (mid-apply
    too), and its pod restarts as a follower."""
    log.error("leader election lost: exiting")
    os._exit(1)


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--bind {bind!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def run(config: PullerConfig, *, bind: str = "0.0.0.0:8081", once: bool = False) -> int:
    """Serve until SIGTERM/SIGINT (exit 0), or with ``once`` run one cycle (0 ok, 1 not)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    agent = build_agent(config)
    if once:
        return 0 if agent.run_cycle() else 1
    if not config.api_token:
        raise ValueError("SLUICE_PULLER_TOKEN must be set to serve the puller API")
    host, port = parse_bind(bind)
    server = make_server(host, port, create_puller_app(agent, config.api_token), threaded=True)
    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.start()
    log.info("sluice puller serving on %s:%s, apps %s", host, port, ", ".join(config.apps))
    try:
        server.serve_forever()
    finally:
        agent.stop()
        server.server_close()
    return 0

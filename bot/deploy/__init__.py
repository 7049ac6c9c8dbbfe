"""The bot's side of merge-to-deploy: gates, approvals, the ledger, the puller, /sync, /rollback.

``Promoter`` is the entry point (``promoter``); the parts it hands work to, by what
each decides: ``gates`` (merge-time gates and approvals), ``ledger_writer``,
``follow`` (waking and following the puller), ``merge``, ``sync``, ``rollback``
(revert PRs and pins), ``events`` (puller events). The ledger format
(``bot.deploy.ledger``) and the puller's wire types (``bot.deploy.puller_client``)
are the only parts the puller uses; the names below load lazily so that importing
those two does not load the rest.
"""

from bot.lazy import lazy_exports

_EXPORTS = {
    "Promoter": "bot.deploy.promoter",
    "DeployDesk": "bot.deploy.desk",
    "GateResult": "bot.deploy.gates",
    "OverrideStore": "bot.deploy.overrides",
    "DeployLog": "bot.deploy.pins",
    "PinStore": "bot.deploy.pins",
    "PullerClient": "bot.deploy.puller_client",
    "PullerError": "bot.deploy.puller_client",
    "LiveDiff": "bot.deploy.live_diff",
    "live_diffs": "bot.deploy.live_diff",
    "render_live_section": "bot.deploy.live_report",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

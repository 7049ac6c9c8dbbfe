"""The bot's side of merge-to-deploy: gates, approvals, the ledger, the puller, /sync, /rollback."""

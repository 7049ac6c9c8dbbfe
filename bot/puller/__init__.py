"""The in-cluster puller: ledger → verify → render → policy → apply/prune/health/drift."""

"""The webhook bot (`sluice serve`): intake, durable jobs, workers, handlers, publishing, metrics."""

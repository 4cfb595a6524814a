"""The worker: consumes task messages and runs them in a pool (edge layer)."""

from celeriac.worker.controller import WorkController

__all__ = ["WorkController"]

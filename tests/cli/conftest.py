"""The end-to-end fixtures (``broker``, ``client``, ``start_worker``), for the commands
that talk to real worker processes: inspect, control, status and events."""

from tests.e2e.conftest import broker, client, start_worker

__all__ = ["broker", "client", "start_worker"]

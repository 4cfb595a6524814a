"""One client-side measurement of one system, run by the driver in a process of its own.

``python client.py <adapter module> <action> [number]`` prints one JSON value:
``describe`` the adapter's version, modes and whether it can run on the broker in
``BENCH_BROKER_URL``; ``fill N`` the enqueue rate while queueing the drain; ``batch N``
the batch enqueue rate; ``round-trips N`` the list of round trip times in ms.
A process per measurement keeps the systems' clients (and their event loops) apart.
"""

from __future__ import annotations

import importlib
import json
import sys
from importlib.metadata import version
from typing import Any


def describe(adapter: Any) -> dict[str, Any]:
    """What the driver needs to know before measuring."""
    unavailable = getattr(adapter, "unavailable", None)
    return {
        "version": version(adapter.DISTRIBUTION),
        "modes": adapter.MODES,
        "results": adapter.RESULTS,
        "batch": adapter.BATCH,
        "unavailable": unavailable() if unavailable is not None else None,
    }


def main(arguments: list[str]) -> int:
    """Run the action named on the command line and print its JSON result."""
    module, action, *rest = arguments
    adapter = importlib.import_module(module)
    number = int(rest[0]) if rest else 0
    if action == "describe":
        answer: Any = describe(adapter)
    elif action == "fill":
        answer = adapter.run_fill(number)
    elif action == "batch":
        answer = adapter.run_fill_batch(number)
    elif action == "round-trips":
        answer = adapter.run_round_trips(number)
    else:
        raise SystemExit(f"unknown action {action!r}")
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

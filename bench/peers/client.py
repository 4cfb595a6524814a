"""One client-side measurement of one system, run by the driver in a process of its own.

``python client.py <adapter module> <action> [number] [timeout]`` prints one JSON value:
``describe`` the adapter's version, modes, workflow primitives and whether it can run on
the broker in ``BENCH_BROKER_URL``; ``fill N`` the enqueue rate while queueing the drain;
``batch N`` the batch enqueue rate; ``round-trips N`` the list of round trip times in ms;
``chord N T`` and ``chain N T`` ``{"seconds": s}`` for a chord of N tasks or a chain of N
links, or ``{"timeout": why}`` when its result was not there within T seconds. Before a
workflow, a few round trips make sure the worker is up, so its start-up is not timed.
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
        "chord": adapter.CHORD,
        "chain": adapter.CHAIN,
        "unavailable": unavailable() if unavailable is not None else None,
    }


def workflow(adapter: Any, action: str, size: int, timeout: float) -> dict[str, Any]:
    """Time one chord or chain once the worker answers; a timeout is an answer too."""
    adapter.run_round_trips(1)
    run = adapter.run_chord if action == "chord" else adapter.run_chain
    try:
        return {"seconds": run(size, timeout)}
    except TimeoutError as error:
        return {"timeout": str(error) or f"no result within {timeout:g} s"}


def main(arguments: list[str]) -> int:
    """Run the action named on the command line and print its JSON result."""
    module, action, *rest = arguments
    adapter = importlib.import_module(module)
    number = int(rest[0]) if rest else 0
    timeout = float(rest[1]) if len(rest) > 1 else 0.0
    if action == "describe":
        answer: Any = describe(adapter)
    elif action == "fill":
        answer = adapter.run_fill(number)
    elif action == "batch":
        answer = adapter.run_fill_batch(number)
    elif action == "round-trips":
        answer = adapter.run_round_trips(number)
    elif action in ("chord", "chain"):
        answer = workflow(adapter, action, number, timeout)
    else:
        raise SystemExit(f"unknown action {action!r}")
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

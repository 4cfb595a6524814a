"""Settlements: the worker's last word on each delivery, batched and kept until it lands.

Every way a delivery leaves the worker (ack, requeue, drop, dead letter, release) is a
``Settlement`` handed to one ``Batcher``; a batch that fails because the broker went away
is kept and retried (``batching.py``), so a broker blip neither leaves a finished task
pending under a live worker nor runs it a second time. Retrying a batch that partly went
through is safe: every transport acts on a tag only while that delivery is still leased.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from celeriac.transports.base import Transport


class Action(Enum):
    """What to do with a delivery."""

    ACK = "ack"
    REQUEUE = "requeue"
    DROP = "drop"
    DEAD_LETTER = "dead_letter"
    RELEASE = "release"


@dataclass(frozen=True, slots=True)
class Settlement:
    """One delivery's settlement; ``reason`` goes with a dead letter, ``delay`` with a requeue."""

    action: Action
    tag: str
    reason: str = ""
    delay: float = 0.0


def apply_settlements(transport: Transport, batch: Sequence[Settlement]) -> None:
    """Apply ``batch`` in order, one transport call per run of alike settlements."""
    for (action, reason, delay), run in itertools.groupby(
        batch, key=lambda settlement: (settlement.action, settlement.reason, settlement.delay)
    ):
        tags = [settlement.tag for settlement in run]
        if action is Action.ACK:
            transport.ack(tags)
        elif action is Action.REQUEUE:
            transport.reject(tags, requeue=True, delay=delay)
        elif action is Action.DROP:
            transport.reject(tags, requeue=False)
        elif action is Action.DEAD_LETTER:
            transport.dead_letter(tags, reason)
        else:
            transport.release(tags)


def redelivery_delay(delivery_count: int) -> float:
    """Seconds a task whose process died waits in the broker before its next delivery.

    Doubles from 0.1 s up to 5 s, so a task that kills its process does not burn a core
    in a crash loop while ``task_max_deliveries`` counts it down.
    """
    return float(min(0.1 * 2 ** max(delivery_count - 1, 0), 5.0))

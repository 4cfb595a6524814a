"""Rate-limit start slots on the Redis broker (edge layer, beside ``redis.py``).

``rate_slots.lua`` books every slot of a fetched batch in one call, by the server's clock,
so the slots of all workers come from one sequence; times cross the script boundary as
whole microseconds, since Lua numbers returned to Redis become integers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from celeriac.transports.base import StartBooking
from celeriac.transports.redis_keys import rate_slot_key

__all__ = ["book_starts"]

MICROSECONDS = 1_000_000


def book_starts(
    script: Callable[[list[str], list[Any]], Any], prefix: str, bookings: Sequence[StartBooking]
) -> list[list[float]]:
    """Book the slots of ``bookings`` with ``script``; return the seconds until each slot."""
    if not bookings:
        return []
    keys = [rate_slot_key(prefix, booking.key) for booking in bookings]
    arguments = [
        value
        for booking in bookings
        for value in (max(1, round(booking.interval * MICROSECONDS)), booking.count)
    ]
    delays = iter(script(keys, arguments))
    return [[next(delays) / MICROSECONDS for _ in range(booking.count)] for booking in bookings]

"""Durable revokes on the Redis broker: one sorted set of revoked ids (edge layer).

Key ``celeriac:revoked`` (after the ``global_keyprefix``) maps each revoked task id to the
Unix time it expires. Recording is one script (``redis_scripts/record_revokes.lua``) that
trims expired ids, keeps the later of two expiries, and sets the key to expire with its
last id, so an abandoned set goes away on its own. Reading trims and reads in one
transaction. Times are the clients' clocks, as the workers compare them with their own.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from importlib import resources

import redis

__all__ = ["read_revokes", "record_revokes"]


@functools.cache
def _script_source() -> str:
    path = resources.files("celeriac.transports").joinpath("redis_scripts/record_revokes.lua")
    return path.read_text(encoding="utf-8")


def record_revokes(client: redis.Redis, key: str, task_ids: Sequence[str], expires: float) -> None:
    """Keep ``task_ids`` in ``key`` for ``expires`` seconds."""
    if not task_ids:
        return
    now = time.time()
    script = client.register_script(_script_source())
    script(keys=[key], args=[repr(now), repr(now + expires), *task_ids])


def read_revokes(client: redis.Redis, key: str) -> dict[str, float]:
    """Drop the expired ids from ``key`` and return the others with their expiry."""
    now = time.time()
    pipeline = client.pipeline(transaction=True)
    pipeline.zremrangebyscore(key, "-inf", now)
    pipeline.zrangebyscore(key, f"({now!r}", "+inf", withscores=True)
    _, members = pipeline.execute()
    return {_text(member): float(score) for member, score in members}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

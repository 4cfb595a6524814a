"""Event dicts as Celery sends them, and the names derived from their type (core layer).

Every event is a flat JSON object with ``type`` and ``timestamp``; the dispatcher adds
``hostname``, ``utcoffset``, ``pid`` and ``clock`` (wire protocol §5).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

__all__ = ["EVENT_EXCHANGE", "Event", "group_from", "routing_key_for", "utcoffset"]

EVENT_EXCHANGE = "celeryev"


def Event(type: str, _fields: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """Make an event dict; ``timestamp`` is now unless given, ``type`` always comes last."""
    event = dict(_fields) if _fields else {}
    event.update(fields)
    if "timestamp" not in event:
        event["timestamp"] = time.time()
    event.pop("type", None)
    event["type"] = type
    return event


def group_from(type: str) -> str:
    """Return an event type's group, the part before the first dash: ``task-sent`` -> ``task``."""
    return type.split("-", 1)[0]


def routing_key_for(type: str) -> str:
    """Return the routing key an event type is published with: ``task-sent`` -> ``task.sent``."""
    return type.replace("-", ".")


def utcoffset() -> float:
    """Return the local offset from UTC in hours, positive west of Greenwich (Celery 5.7).

    Worked out again at most once a minute: a busy worker asks for it with every event.
    """
    minute = int(time.time() // 60)
    if _offset_cache[0] != minute:
        is_dst = time.daylight and time.localtime().tm_isdst > 0
        _offset_cache[:] = [minute, (time.altzone if is_dst else time.timezone) / 3600]
    return float(_offset_cache[1])


# [minute the offset was worked out in, the offset]
_offset_cache: list[float] = [-1, 0.0]

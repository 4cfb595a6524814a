"""Durable revokes on RabbitMQ: a stream queue that every worker reads from its start
(edge layer, beside ``amqp.py``).

RabbitMQ has no keyed store, and a classic queue is consumed away by its first reader, so
revoked ids go to the durable stream queue ``celeriac.revoked`` (``x-queue-type: stream``,
RabbitMQ 3.9 and later): an append-only log that any number of consumers read from its
first offset without removing anything. Each revoke appends one message,
``{"revoked": [ids], "expires": <Unix time>}``, and a reader keeps the ids whose time has
not passed. The broker deletes whole segments (1 MB each here) once they are older than
``x-max-age``: the ``worker_revoke_expires`` of the first client that declared the stream,
but at least a day, so expired entries leave the disk soon and a later client with a
longer setting is still served; when an id expires is decided by the reader.

A stream tells ``queue.declare`` no length, so a reader cannot know when it has seen
everything: it first appends a marker with an id of its own, then consumes from the
first offset until that marker comes back. Reading uses a short connection of its own,
as a stream consumer needs a prefetch and offset arguments that the transport's session
does not use; recording goes through the session, confirmed.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

import amqp

from celeriac.transports import redact_url
from celeriac.transports.amqp_connection import (
    ConnectionSettings,
    connection_error,
    open_connection,
)
from celeriac.transports.amqp_topology import QueueSpec
from celeriac.transports.base import TransportError

__all__ = ["REVOKE_STREAM", "read_revokes", "revoke_entry", "revoke_stream"]

REVOKE_STREAM = "celeriac.revoked"
MIN_MAX_AGE_SECONDS = 86_400
SEGMENT_BYTES = 1_000_000
READ_PREFETCH = 500


def revoke_stream(expires: float) -> QueueSpec:
    """The stream as a client keeping revokes for ``expires`` seconds would create it."""
    max_age = max(math.ceil(expires), MIN_MAX_AGE_SECONDS)
    return QueueSpec(
        REVOKE_STREAM,
        arguments={
            "x-queue-type": "stream",
            "x-max-age": f"{max_age}s",
            "x-stream-max-segment-size-bytes": SEGMENT_BYTES,
        },
    )


def revoke_entry(task_ids: Sequence[str], expires: float) -> amqp.Message:
    """The stream message that keeps ``task_ids`` revoked for ``expires`` seconds."""
    body = {"revoked": list(task_ids), "expires": time.time() + expires}
    return amqp.Message(json.dumps(body), content_type="application/json", delivery_mode=2)


def read_revokes(settings: ConnectionSettings) -> dict[str, float]:
    """Read the stream from its start to a marker of ours; return the ids not expired.

    Raises:
        TransportError: the broker could not be reached or failed the read.
    """
    try:
        connection = open_connection(settings)
    except (OSError, amqp.exceptions.AMQPError) as exc:
        raise connection_error(settings.url, exc) from exc
    try:
        return _read(connection, settings.operation_timeout)
    except (OSError, TimeoutError, amqp.exceptions.AMQPError) as exc:
        raise TransportError(
            f"RabbitMQ broker {redact_url(settings.url)}: reading revokes failed: {exc!r}"
        ) from exc
    finally:
        with contextlib.suppress(OSError, amqp.exceptions.AMQPError):
            connection.close()
        connection.collect()


def _read(connection: amqp.Connection, timeout: float) -> dict[str, float]:
    channel = connection.channel()
    try:
        channel.queue_declare(REVOKE_STREAM, passive=True)
    except amqp.exceptions.NotFound:
        return {}
    marker = uuid.uuid4().hex
    channel.basic_publish_confirm(amqp.Message(json.dumps({"marker": marker})), "", REVOKE_STREAM)
    entries: list[dict[str, Any]] = []
    reached: list[bool] = []

    def receive(message: amqp.Message) -> None:
        channel.basic_ack(message.delivery_tag)
        try:
            entry = json.loads(message.body)
        except ValueError:
            return
        if isinstance(entry, dict):
            entries.append(entry)
            if entry.get("marker") == marker:
                reached.append(True)

    channel.basic_qos(0, READ_PREFETCH, False)
    channel.basic_consume(REVOKE_STREAM, callback=receive, arguments={"x-stream-offset": "first"})
    deadline = time.monotonic() + timeout
    while not reached:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the revokes stream did not reach our marker in time")
        connection.drain_events(timeout=remaining)
    return _kept(entries, time.time())


def _kept(entries: list[dict[str, Any]], now: float) -> dict[str, float]:
    """The ids of ``entries`` whose expiry is after ``now``, each with its latest expiry."""
    kept: dict[str, float] = {}
    for entry in entries:
        expires = entry.get("expires")
        if not isinstance(expires, int | float) or expires <= now:
            continue
        for task_id in entry.get("revoked") or ():
            kept[str(task_id)] = max(float(expires), kept.get(str(task_id), 0.0))
    return kept

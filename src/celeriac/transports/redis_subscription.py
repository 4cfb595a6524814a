"""Broadcast channels of the Redis broker: a pub/sub reader on its own connection (edge layer).

Events and remote control travel on ``celeriac:broadcast:<channel>`` (``redis_keys.py``);
a subscriber with a routing key keeps only what was sent with it.
"""

from __future__ import annotations

import logging
import time

import redis

from celeriac.exceptions import DecodeError
from celeriac.protocol.envelope import Envelope
from celeriac.transports import redact_url
from celeriac.transports.base import TransportError, accepts_routing_key
from celeriac.transports.redis_connection import broker_errors

__all__ = ["RedisSubscription"]

logger = logging.getLogger("celeriac.transports.redis")

SUBSCRIBE_TIMEOUT = 10.0
# A subscription's wait is cut into slices this long so that ``close`` is noticed.
SUBSCRIPTION_SLICE = 1.0


class RedisSubscription:
    """A reader of one broadcast channel through Redis pub/sub, on its own connection.

    ``subscribe`` returns once Redis confirmed the subscription, so nothing broadcast
    after it is missed. Use it from one thread at a time.
    """

    def __init__(
        self, client: redis.Redis, channel: str, url: str, routing_key: str | None = None
    ) -> None:
        self._url = url
        self._routing_key = routing_key
        self._pubsub = client.pubsub()
        self._closed = False
        with broker_errors(self._url):
            self._pubsub.subscribe(channel)
            deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
            while (remaining := deadline - time.monotonic()) > 0:
                message = self._pubsub.get_message(timeout=remaining)
                if message is not None and message["type"] == "subscribe":
                    return
        self._pubsub.close()
        raise TransportError(f"Redis broker {redact_url(url)} did not confirm the subscription")

    def get(self, timeout: float) -> list[Envelope]:
        """Return the envelopes broadcast since the last call, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        envelopes: list[Envelope] = []
        with broker_errors(self._url):
            wait = timeout
            while not self._closed:
                message = self._pubsub.get_message(timeout=min(wait, SUBSCRIPTION_SLICE))
                if message is not None:
                    if message["type"] == "message":
                        self._add(envelopes, message["data"])
                    wait = 0.0
                    continue
                remaining = deadline - time.monotonic()
                if envelopes or remaining <= 0:
                    break
                wait = remaining
        return envelopes

    def close(self) -> None:
        """Unsubscribe and close the connection; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._pubsub.close()

    def _add(self, envelopes: list[Envelope], raw: bytes) -> None:
        try:
            envelope = Envelope.from_json(raw)
        except DecodeError as exc:
            logger.error("broadcast on %s is not an envelope: %s", redact_url(self._url), exc)
            return
        if accepts_routing_key(self._routing_key, envelope):
            envelopes.append(envelope)

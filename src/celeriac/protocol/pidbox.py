"""Remote-control messages in the shape of Celery's pidbox (wire protocol §6).

A request is broadcast on the ``<mailbox>.pidbox`` channel to every worker; the body names
the ``method``, its keyword ``arguments`` and which nodes should act (``destination``, or a
``pattern`` with its ``matcher``). A request that wants replies carries a ``ticket`` and a
``reply_to``: each node that acts sends one ``{<node>: <value>}`` body to the
``reply.<mailbox>.pidbox`` channel with that routing key and the ticket in its headers.
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celeriac.exceptions import DecodeError
from celeriac.protocol.envelope import Envelope

PERSISTENT = 2
TRANSIENT = 1


def request_channel(mailbox: str) -> str:
    """The channel (fanout exchange) control requests go to: ``celery.pidbox``."""
    return f"{mailbox}.pidbox"


def reply_channel(mailbox: str) -> str:
    """The channel (direct exchange) replies go to: ``reply.celery.pidbox``."""
    return f"reply.{mailbox}.pidbox"


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """One control request as a worker reads it."""

    method: str
    arguments: Mapping[str, Any]
    destination: Sequence[str] | None = None
    pattern: str | None = None
    matcher: str | None = None
    ticket: str | None = None
    reply_to: Mapping[str, str] | None = None
    clock: int | None = None
    expires: float | None = None

    @property
    def wants_reply(self) -> bool:
        """Celery leaves ``ticket`` and ``reply_to`` out of casts such as ``revoke``."""
        return bool(self.ticket and self.reply_to)

    def is_for(self, hostname: str) -> bool:
        """Tell whether the node ``hostname`` should act on this request."""
        if self.pattern:
            if self.matcher == "pcre":
                return re.match(self.pattern, hostname) is not None
            return fnmatch.fnmatchcase(hostname, self.pattern)
        return not self.destination or hostname in self.destination

    def has_expired(self, now: float) -> bool:
        """Tell whether the client stopped waiting (``expires`` is the send time + timeout)."""
        return self.expires is not None and now > self.expires


def build_request(
    mailbox: str,
    method: str,
    arguments: Mapping[str, Any],
    *,
    destination: Sequence[str] | None = None,
    pattern: str | None = None,
    matcher: str | None = None,
    reply_key: str | None = None,
    clock: int = 0,
    timeout: float | None = None,
) -> tuple[Envelope, str | None]:
    """Build a request envelope; with ``reply_key`` it wants replies, returned with its ticket."""
    body: dict[str, Any] = {
        "method": method,
        "arguments": dict(arguments),
        "destination": list(destination) if destination else None,
        "pattern": pattern,
        "matcher": matcher,
    }
    ticket = None
    if reply_key is not None:
        ticket = str(uuid.uuid4())
        body["ticket"] = ticket
        body["reply_to"] = {"exchange": reply_channel(mailbox), "routing_key": reply_key}
    headers: dict[str, Any] = {"clock": clock}
    if timeout is not None:
        headers["expires"] = time.time() + timeout
    channel = request_channel(mailbox)
    envelope = Envelope(
        body=json.dumps(body).encode("utf-8"),
        headers=headers,
        properties={
            "delivery_mode": PERSISTENT,
            "delivery_info": {"exchange": channel, "routing_key": ""},
        },
    )
    return envelope, ticket


def parse_request(envelope: Envelope) -> ControlRequest:
    """Read a request envelope.

    Raises:
        DecodeError: the body is not a JSON object with a string ``method``.
    """
    body = _json_object(envelope)
    method = body.get("method")
    if not isinstance(method, str):
        raise DecodeError(f"control request without a method: {body!r:.200}")
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, Mapping):
        raise DecodeError(f"control request {method!r} with arguments that are not a mapping")
    destination = body.get("destination")
    reply_to = body.get("reply_to")
    headers = envelope.headers
    return ControlRequest(
        method=method,
        arguments=arguments,
        destination=[destination] if isinstance(destination, str) else destination,
        pattern=body.get("pattern"),
        matcher=body.get("matcher"),
        ticket=body.get("ticket"),
        reply_to=reply_to if isinstance(reply_to, Mapping) else None,
        clock=_number(headers.get("clock"), int),
        expires=_number(headers.get("expires"), float),
    )


def build_reply(request: ControlRequest, hostname: str, value: Any, *, clock: int) -> Envelope:
    """Build the one reply a node sends to a request that wants replies."""
    assert request.reply_to is not None
    return Envelope(
        body=json.dumps({hostname: value}, default=repr).encode("utf-8"),
        headers={"ticket": request.ticket, "clock": clock},
        properties={
            "delivery_mode": TRANSIENT,
            "delivery_info": {
                "exchange": request.reply_to.get("exchange", ""),
                "routing_key": request.reply_to.get("routing_key", ""),
            },
        },
    )


def parse_reply(envelope: Envelope) -> tuple[str | None, dict[str, Any]]:
    """Read a reply: its ticket and its ``{node: value}`` body.

    Raises:
        DecodeError: the body is not a JSON object.
    """
    ticket = envelope.headers.get("ticket")
    return (ticket if isinstance(ticket, str) else None), _json_object(envelope)


def _json_object(envelope: Envelope) -> dict[str, Any]:
    if envelope.content_type not in ("application/json", "json"):
        raise DecodeError(f"control message of content type {envelope.content_type!r}")
    try:
        body = json.loads(envelope.body)
    except ValueError as exc:
        raise DecodeError(f"control message is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise DecodeError(f"control message is not a JSON object: {body!r:.200}")
    return body


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    try:
        return None if value is None else kind(value)
    except (TypeError, ValueError):
        return None

"""Remote-control messages in Celery's pidbox shape (wire protocol §6), without a broker."""

from __future__ import annotations

import json

import pytest

from celeriac.exceptions import DecodeError
from celeriac.protocol.envelope import Envelope
from celeriac.protocol.pidbox import build_reply, build_request, parse_reply, parse_request


def test_a_cast_leaves_ticket_and_reply_to_out_as_celery_does() -> None:
    envelope, ticket = build_request("celery", "revoke", {"task_id": "x"}, clock=3, timeout=1.0)

    body = json.loads(envelope.body)
    request = parse_request(envelope)

    assert ticket is None
    assert "ticket" not in body
    assert "reply_to" not in body
    assert envelope.properties["delivery_info"] == {"exchange": "celery.pidbox", "routing_key": ""}
    assert envelope.headers["clock"] == 3
    assert not request.wants_reply
    assert request.arguments == {"task_id": "x"}


def test_a_request_for_replies_names_its_reply_channel_and_key() -> None:
    envelope, ticket = build_request("celery", "ping", {}, reply_key="oid-1", timeout=1.0)

    request = parse_request(envelope)
    reply = build_reply(request, "w1@host", {"ok": "pong"}, clock=7)
    reply_ticket, body = parse_reply(reply)

    assert request.wants_reply
    assert request.reply_to == {"exchange": "reply.celery.pidbox", "routing_key": "oid-1"}
    assert reply.properties["delivery_info"]["routing_key"] == "oid-1"
    assert reply_ticket == ticket
    assert body == {"w1@host": {"ok": "pong"}}


@pytest.mark.parametrize(
    ("fields", "hostname", "expected"),
    [
        ({}, "w1@a", True),
        ({"destination": ["w1@a"]}, "w1@a", True),
        ({"destination": ["w2@a"]}, "w1@a", False),
        ({"destination": "w1@a"}, "w1@a", True),
        ({"pattern": "w*@a", "matcher": "glob"}, "w1@a", True),
        ({"pattern": "w*@b", "matcher": "glob"}, "w1@a", False),
        ({"pattern": r"w\d@a", "matcher": "pcre"}, "w1@a", True),
        ({"pattern": r"x\d@a", "matcher": "pcre"}, "w1@a", False),
    ],
)
def test_destination_and_patterns_pick_the_nodes_that_act(
    fields: dict[str, object], hostname: str, expected: bool
) -> None:
    body = {"method": "ping", "arguments": {}, **fields}
    envelope = Envelope(body=json.dumps(body).encode())

    assert parse_request(envelope).is_for(hostname) is expected


def test_an_expired_request_is_told_apart() -> None:
    envelope, _ = build_request("celery", "ping", {}, timeout=1.0)

    request = parse_request(envelope)

    assert request.expires is not None
    assert not request.has_expired(request.expires - 0.5)
    assert request.has_expired(request.expires + 0.5)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"arguments": {}}', b'{"method": "ping", "arguments": [1]}'],
)
def test_a_request_that_cannot_be_read_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_request(Envelope(body=body))

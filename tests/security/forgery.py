"""What an attacker with write access to the broker might send, built from real messages.

Shared by the unit tests (messages parsed in the test process) and the end-to-end tests
(messages put on a real worker's queue).
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

from celeriac.protocol.envelope import Envelope
from celeriac.protocol.message import build_task_message
from celeriac.security.certificate import CONTENT_TYPE as AUTH_CONTENT_TYPE
from celeriac.security.serializer import SignedSerializer

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def signed_message(
    serializer: str, name: str, args: Sequence[Any], task_id: str | None = None
) -> Envelope:
    """A task message signed as an app set up for ``serializer`` sends it."""
    return build_task_message(name, task_id or str(uuid.uuid4()), args, {}, serializer=serializer)


def with_header(envelope: Envelope, name: str, value: Any) -> Envelope:
    """The message with one header changed after signing."""
    return dataclasses.replace(envelope, headers={**envelope.headers, name: value})


def with_body_bytes_replaced(envelope: Envelope, old: bytes, new: bytes) -> Envelope:
    """The message with bytes of its signed content changed (inside auth's base64 too)."""
    body = envelope.body
    if envelope.content_type == AUTH_CONTENT_TYPE:
        inner = base64.b64decode(body)
        assert old in inner
        body = base64.b64encode(inner.replace(old, new))
    else:
        assert old in body
        body = body.replace(old, new)
    return dataclasses.replace(envelope, body=body)


def signed_by(
    signer: SignedSerializer, name: str, args: Sequence[Any], task_id: str | None = None
) -> Envelope:
    """A task message sealed and signed by ``signer``: another key, or another clock."""
    envelope = build_task_message(name, task_id or str(uuid.uuid4()), args, {}, serializer="json")
    body = signer.encode_message([list(args), {}, dict(EMBED)], envelope.headers)
    return dataclasses.replace(
        envelope,
        body=body,
        content_type=signer.signer.content_type,
        content_encoding=signer.signer.content_encoding,
    )

"""A signing serializer: an inner serializer's output, sealed and signed by a Signer.

Registered in ``celeriac.serialization`` under ``auth`` or ``hmac`` by ``setup_security``.
Used plainly (results, events, ``Producer.publish``) it signs the serialized value;
given a task message's headers (``build_task_message``, and ``TaskMessage.decode_body`` in
the process that runs the task) it seals the body first (``seal.py``), so the one check
where the body is decoded covers headers, body and age together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from celeriac import serialization
from celeriac.security.seal import check_seal, open_seal, seal_body
from celeriac.security.signer import SignatureError, Signer

__all__ = ["SignedSerializer", "register_signed_serializer"]


@dataclass(frozen=True, slots=True)
class SignedSerializer:
    """Signs what ``inner`` serializes; decodes only what verifies.

    ``max_age`` (seconds, None for no limit) bounds how old a sealed task message may be;
    ``requires_seal`` refuses task messages signed without one; ``now`` is the clock.
    """

    signer: Signer
    inner: str = "json"
    max_age: float | None = None
    requires_seal: bool = False
    now: Callable[[], float] = time.time

    def encode(self, value: Any) -> bytes:
        """Serialize ``value`` with the inner serializer and sign it."""
        content_type, content_encoding, body = serialization.dumps(value, self.inner)
        return self.signer.sign(content_type, content_encoding, body)

    def decode(self, payload: str | bytes) -> Any:
        """Verify a payload and deserialize what it wraps.

        Raises:
            SignatureError: the payload does not verify, or wraps another content type than
                the inner serializer's (Celery would decode whatever it names).
        """
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        content_type, content_encoding, body = self.signer.verify(data)
        expected = serialization.get_codec(self.inner).content_type
        if content_type != expected:
            raise SignatureError(
                f"the signed content is {content_type[:100]!r}, not {expected!r} (the"
                " serializer given to setup_security)"
            )
        return serialization.loads(body, content_type, content_encoding)

    def encode_message(self, body: Any, headers: Mapping[str, Any]) -> bytes:
        """Seal a task body over its message's headers, then sign it."""
        return self.encode(seal_body(body, headers, self.now()))

    def decode_message(self, payload: str | bytes, headers: Mapping[str, Any]) -> Any:
        """Verify a task message's body, then its seal against ``headers`` and the clock.

        Raises:
            SignatureError: as ``decode``; or the headers changed, the message is older than
                ``max_age``, or it has no seal where one is required.
        """
        body, seal = open_seal(self.decode(payload))
        if seal is None:
            if self.requires_seal:
                raise SignatureError(
                    "the task message has no seal over its headers, which every hmac-signed"
                    " task message carries"
                )
            return body
        check_seal(seal, headers, max_age=self.max_age, now=self.now())
        return body


def register_signed_serializer(name: str, serializer: SignedSerializer) -> None:
    """Register ``serializer`` as the codec ``name`` under its signer's content type."""
    signer = serializer.signer
    serialization.register(
        name,
        serializer.encode,
        serializer.decode,
        content_type=signer.content_type,
        content_encoding=signer.content_encoding,
        message_encoder=serializer.encode_message,
        message_decoder=serializer.decode_message,
    )

"""The broker envelope: body bytes with AMQP-style headers and properties.

Every transport carries Envelopes. ``to_json``/``from_json`` give kombu's stored form
(wire protocol §3.1), which the SQLite and Redis transports keep at rest so that the
messages read the same in every tool.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from celeriac.exceptions import DecodeError


@dataclass(slots=True)
class Envelope:
    """One broker message; ``properties`` holds correlation_id, reply_to, priority and so on."""

    body: bytes
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Encode as kombu's JSON envelope, with the body in base64."""
        properties = dict(self.properties)
        properties["body_encoding"] = "base64"
        properties.setdefault("delivery_tag", str(uuid.uuid4()))
        return json.dumps(
            {
                "body": base64.b64encode(self.body).decode("ascii"),
                "content-encoding": self.content_encoding,
                "content-type": self.content_type,
                "headers": self.headers,
                "properties": properties,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        """Decode kombu's JSON envelope; a body without ``body_encoding`` is the payload text.

        Anything that is not an envelope, however hostile (wrong types, nesting past the
        recursion limit), raises DecodeError, which transports quarantine.
        """
        try:
            data = json.loads(raw)
            properties = dict(data.get("properties") or {})
            body = data["body"]
            if properties.pop("body_encoding", None) == "base64":
                payload = base64.b64decode(body)
            else:
                payload = body.encode("utf-8") if isinstance(body, str) else bytes(body)
            content_type = data.get("content-type") or "application/json"
            content_encoding = data.get("content-encoding") or "utf-8"
            if not isinstance(content_type, str) or not isinstance(content_encoding, str):
                raise TypeError(f"content type {content_type!r} or encoding is not text")
            return cls(
                body=payload,
                content_type=content_type,
                content_encoding=content_encoding,
                headers=dict(data.get("headers") or {}),
                properties=properties,
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise DecodeError(f"not a message envelope: {exc}") from exc

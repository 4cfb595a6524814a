"""The Signer interface both signing modes implement, and the error they raise.

A signer wraps already-serialized content (its content type, encoding and bytes) into one
signed payload, and unwraps a payload only once its signature checks out. What the payload
looks like on the wire is the signer's own: Celery's ``auth`` format for certificates
(``certificate.py``), celeriac's own for a shared secret (``shared_secret.py``).
"""

from __future__ import annotations

from typing import Protocol

from celeriac.exceptions import DecodeError, SecurityError

__all__ = ["SignatureError", "Signer"]


class SignatureError(SecurityError, DecodeError):
    """A signed message failed its check: altered, signed by an unknown key, or too old.

    It is a ``SecurityError`` (Celery's name for the family) and a ``DecodeError``, so every
    place that refuses undecodable input refuses a forged message the same way. Its text
    names the key or certificate by its id, never by anything secret.
    """


class Signer(Protocol):
    """Signs serialized content into a payload and checks payloads back into content."""

    content_type: str
    """The content type of the signed payload (the codec's own)."""

    content_encoding: str
    """The content encoding of the signed payload."""

    def sign(self, content_type: str, content_encoding: str, body: bytes) -> bytes:
        """Wrap serialized content, with the signature, into one payload."""
        ...

    def verify(self, payload: bytes) -> tuple[str, str, bytes]:
        """Check a payload's signature; return the content type, encoding and bytes it wraps.

        Raises:
            SignatureError: the payload is malformed, altered, or signed by an unknown key.
        """
        ...

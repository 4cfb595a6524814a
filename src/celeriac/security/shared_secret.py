"""The ``hmac`` signer: an HMAC with one secret that every client and worker shares.

celeriac's own mode (Celery has no such serializer); it needs only the standard library.
The payload (content type ``application/x-celeriac-hmac``, binary) is six fields joined by
newlines, the last of which may hold anything::

    celeriac-hmac-1 \\n key id \\n content type \\n content encoding \\n base64(mac) \\n body

The MAC (``security_digest``, sha256 by default) covers every field but itself, so unlike
Celery's ``auth`` format the inner content type cannot be swapped. The key id is an HMAC of
a fixed text under the secret: it tells "signed with another secret" from "altered"
without saying anything about the secret a signed message does not already say.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from celeriac.exceptions import ImproperlyConfigured
from celeriac.security.signer import SignatureError

__all__ = ["CONTENT_TYPE", "MIN_KEY_BYTES", "SharedSecretSigner", "key_id"]

CONTENT_TYPE = "application/x-celeriac-hmac"
MIN_KEY_BYTES = 32

_MAGIC = b"celeriac-hmac-1"
_SEPARATOR = b"\n"
_KEY_ID_TEXT = b"celeriac security_hmac_key id"
# Enough for a key id or a content type; anything longer is not ours and is shown cut.
_SHOWN_FIELD_LENGTH = 64


def key_id(secret: bytes) -> str:
    """The public id of a secret: 16 hex digits, the same on every node that shares it."""
    return hmac.new(secret, _KEY_ID_TEXT, hashlib.sha256).hexdigest()[:16]


class SharedSecretSigner:
    """Signs with one shared secret and accepts only payloads signed with it.

    Safe to share between threads: it holds no state beyond the secret.
    """

    content_type = CONTENT_TYPE
    content_encoding = "binary"

    def __init__(self, secret: bytes, digest: str = "sha256") -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise ImproperlyConfigured(
                f"security_hmac_key is {len(secret)} bytes; it must be at least"
                f" {MIN_KEY_BYTES} random bytes, e.g. python -c"
                " 'import secrets; print(secrets.token_hex(32))'"
            )
        try:
            hashlib.new(digest)
        except ValueError as exc:
            raise ImproperlyConfigured(f"security_digest {digest!r} is not a hash") from exc
        self._secret = secret
        self._digest = digest
        self.key_id = key_id(secret)

    def __repr__(self) -> str:
        return f"SharedSecretSigner(key_id={self.key_id!r}, digest={self._digest!r})"

    def sign(self, content_type: str, content_encoding: str, body: bytes) -> bytes:
        """Wrap serialized content and its MAC into one payload."""
        fields = [_MAGIC, self.key_id.encode(), content_type.encode(), content_encoding.encode()]
        mac = self._mac(fields, body)
        return _SEPARATOR.join([*fields, base64.b64encode(mac), body])

    def verify(self, payload: bytes) -> tuple[str, str, bytes]:
        """Check the payload's MAC; return the content type, encoding and bytes it wraps."""
        parts = payload.split(_SEPARATOR, 5)
        if len(parts) != 6 or parts[0] != _MAGIC:
            raise SignatureError("not an hmac-signed payload")
        _, signer_id, content_type, content_encoding, encoded_mac, body = parts
        if signer_id != self.key_id.encode():
            raise SignatureError(
                f"signed with an unknown key (key id {_shown(signer_id)}), not this app's"
                f" security_hmac_key (key id {self.key_id})"
            )
        try:
            mac = base64.b64decode(encoded_mac, validate=True)
        except binascii.Error as exc:
            raise SignatureError("the payload's MAC is not base64") from exc
        expected = self._mac([_MAGIC, signer_id, content_type, content_encoding], body)
        if not hmac.compare_digest(mac, expected):
            raise SignatureError(
                f"bad signature (key id {self.key_id}): the message was altered after signing"
            )
        return content_type.decode("ascii"), content_encoding.decode("ascii"), body

    def _mac(self, fields: list[bytes], body: bytes) -> bytes:
        return hmac.new(self._secret, _SEPARATOR.join([*fields, body]), self._digest).digest()


def _shown(field: bytes) -> str:
    """A field of an untrusted payload as it may appear in a log line: quoted and cut."""
    return repr(field[:_SHOWN_FIELD_LENGTH].decode("ascii", "replace"))

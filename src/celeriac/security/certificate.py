"""The ``auth`` signer: RSA keys and X.509 certificates, in Celery's wire format.

Needs the ``cryptography`` package (``pip install 'celeriac[auth]'``); this module is
imported only when the ``auth`` serializer is set up. The payload is what Celery 5's
``auth`` serializer writes (content type ``application/data``, utf-8), so either side
verifies the other's messages given the same keys and certificates::

    base64( base64(signer id) \\0\\1 base64(signature) \\0\\1 content type \\0\\1
            content encoding \\0\\1 body )

The signature is RSA-PSS (MGF1, maximum salt length) with ``security_digest`` over the body
alone, as Celery signs it; the signer id is the certificate's issuer values joined by
spaces, then its serial number. Celery leaves the content type outside the signature and
decodes with whatever it names; celeriac accepts only the one serializer it was set up with.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import glob
import os
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from celeriac.exceptions import ImproperlyConfigured, SecurityError
from celeriac.security.signer import SignatureError

__all__ = [
    "CONTENT_TYPE",
    "CertificateSigner",
    "certificate_id",
    "load_certificate",
    "load_certificate_store",
    "load_private_key",
]

CONTENT_TYPE = "application/data"

_SEPARATOR = b"\x00\x01"


def certificate_id(certificate: x509.Certificate) -> str:
    """The id a signer is known by: issuer values and serial number, as Celery writes it."""
    values = [_text(attribute.value) for attribute in certificate.issuer]
    return f"{' '.join(values)} {certificate.serial_number}"


def load_private_key(path: str, password: str | bytes | None) -> rsa.RSAPrivateKey:
    """Read an RSA private key from a PEM file (``security_key``).

    Raises:
        ImproperlyConfigured: the file cannot be read.
        SecurityError: it holds no RSA private key, or the password does not open it.
    """
    data = _read(path, "security_key")
    secret = password.encode() if isinstance(password, str) else password
    try:
        key = serialization.load_pem_private_key(data, password=secret)
    except (ValueError, TypeError) as exc:
        # cryptography's message says what is wrong (format, password) and holds no key data.
        raise SecurityError(f"cannot load the private key in {path}: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecurityError(f"the private key in {path} is not an RSA key, as auth requires")
    return key


def load_certificate(path: str) -> x509.Certificate:
    """Read an X.509 certificate with an RSA public key from a PEM file.

    Raises:
        ImproperlyConfigured: the file cannot be read.
        SecurityError: it holds no certificate, or the certificate's key is not RSA.
    """
    return _parse_certificate(_read(path, "security_certificate"), path)


def load_certificate_store(
    pattern: str, now: Callable[[], datetime.datetime] | None = None
) -> dict[str, x509.Certificate]:
    """Read the certificates trusted to sign (``security_cert_store``), by signer id.

    ``pattern`` is a folder (every file in it) or a glob, as Celery reads it.

    Raises:
        ImproperlyConfigured: nothing matches the pattern.
        SecurityError: a file is no certificate, one has expired, or two share an id.
    """
    paths = sorted(glob.glob(os.path.join(pattern, "*") if os.path.isdir(pattern) else pattern))
    if not paths:
        raise ImproperlyConfigured(f"security_cert_store {pattern!r} holds no certificate")
    moment = (now or _utc_now)()
    store: dict[str, x509.Certificate] = {}
    for path in paths:
        certificate = _parse_certificate(_read(path, "security_cert_store"), path)
        signer = certificate_id(certificate)
        if certificate.not_valid_after_utc <= moment:
            raise SecurityError(f"certificate {signer!r} in {path} has expired")
        if signer in store:
            raise SecurityError(f"two certificates in security_cert_store have id {signer!r}")
        store[signer] = certificate
    return store


class CertificateSigner:
    """Signs with a private key as its certificate's holder; verifies against a store.

    Safe to share between threads: keys and certificates are immutable.
    """

    content_type = CONTENT_TYPE
    content_encoding = "utf-8"

    def __init__(
        self,
        key: rsa.RSAPrivateKey,
        certificate: x509.Certificate,
        store: dict[str, x509.Certificate],
        digest: str = "sha256",
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SecurityError("the security_certificate's key is not an RSA key")
        if public_key.public_numbers() != key.public_key().public_numbers():
            raise ImproperlyConfigured(
                "security_key is not the private key of security_certificate: messages it"
                " signs would not verify"
            )
        self._key = key
        self._store = dict(store)
        self._hash = _hash_algorithm(digest)
        self._now = now or _utc_now
        self.signer_id = certificate_id(certificate)

    def __repr__(self) -> str:
        return f"CertificateSigner(signer_id={self.signer_id!r}, trusted={len(self._store)})"

    def sign(self, content_type: str, content_encoding: str, body: bytes) -> bytes:
        """Sign ``body`` and pack it with its signer id and content type, as Celery does."""
        signature = self._key.sign(body, self._padding(), self._hash)
        fields = [
            base64.b64encode(self.signer_id.encode()),
            base64.b64encode(signature),
            content_type.encode(),
            content_encoding.encode(),
            body,
        ]
        return base64.b64encode(_SEPARATOR.join(fields))

    def verify(self, payload: bytes) -> tuple[str, str, bytes]:
        """Check the body's signature by a trusted certificate; return what the payload wraps."""
        try:
            parts = base64.b64decode(payload, validate=True).split(_SEPARATOR, 4)
            if len(parts) != 5:
                raise SignatureError("not an auth-signed payload")
            signer = base64.b64decode(parts[0], validate=True).decode("utf-8")
            signature = base64.b64decode(parts[1], validate=True)
            content_type, content_encoding = parts[2].decode("ascii"), parts[3].decode("ascii")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise SignatureError(f"not an auth-signed payload: {exc}") from exc
        body = parts[4]
        certificate = self._store.get(signer)
        if certificate is None:
            raise SignatureError(
                f"signed by an unknown certificate {signer[:200]!r}: not in security_cert_store"
            )
        moment = self._now()
        if not certificate.not_valid_before_utc <= moment < certificate.not_valid_after_utc:
            raise SignatureError(f"certificate {signer!r} is not valid now (expired, or not yet)")
        public_key = certificate.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)  # only RSA certificates are loaded
        try:
            public_key.verify(signature, body, self._padding(), self._hash)
        except InvalidSignature as exc:
            raise SignatureError(
                f"bad signature by certificate {signer!r}: the message was altered after signing"
            ) from exc
        return content_type, content_encoding, body

    def _padding(self) -> padding.PSS:
        return padding.PSS(mgf=padding.MGF1(self._hash), salt_length=padding.PSS.MAX_LENGTH)


def _hash_algorithm(digest: str) -> hashes.HashAlgorithm:
    """The hash named by ``security_digest`` (``sha256``), as Celery looks it up."""
    algorithm: Any = getattr(hashes, digest.upper(), None)
    if isinstance(algorithm, type) and issubclass(algorithm, hashes.HashAlgorithm):
        try:
            instance: hashes.HashAlgorithm = algorithm()
        except TypeError:
            pass  # a hash that needs a length (SHAKE): not one a signature can use
        else:
            return instance
    raise ImproperlyConfigured(f"security_digest {digest!r} is not a hash for signatures")


def _parse_certificate(data: bytes, path: str) -> x509.Certificate:
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise SecurityError(f"{path} holds no PEM certificate: {exc}") from exc
    if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
        raise SecurityError(f"the certificate in {path} has no RSA key, as auth requires")
    return certificate


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ImproperlyConfigured(f"{setting}: cannot read {path}: {exc.strerror}") from exc


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)

"""Message signing: the ``auth`` and ``hmac`` serializers, set up by ``app.setup_security()``.

``auth`` is Celery's: RSA keys and X.509 certificates (``security_key``,
``security_certificate``, ``security_cert_store``, ``security_key_password``,
``security_digest``), in Celery's wire format, so Celery and celeriac verify each other's
messages; it needs ``pip install 'celeriac[auth]'``. ``hmac`` is celeriac's own: one shared
secret (``security_hmac_key``), the standard library only. Either way celeriac seals each
task message it sends over its headers and the time (``seal.py``), and a worker refuses a
task message whose body or headers were altered, that a key it does not trust signed, or
that is older than ``security_max_age``. The check runs where the body is decoded, in the
process that runs the task; the worker dead-letters the message with the reason.

Like Celery's, the set-up is process-wide: the serializer is registered for every app.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from celeriac.config import Settings
from celeriac.current import get_current_app
from celeriac.exceptions import ImproperlyConfigured
from celeriac.security.serializer import SignedSerializer, register_signed_serializer
from celeriac.security.shared_secret import SharedSecretSigner
from celeriac.security.signer import SignatureError, Signer

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["SignatureError", "setup_security"]

SIGNING_SERIALIZERS = ("auth", "hmac")


def setup_security(
    allowed_serializers: Iterable[str] | None = None,
    key: str | None = None,
    key_password: str | bytes | None = None,
    cert: str | None = None,
    store: str | None = None,
    digest: str | None = None,
    serializer: str = "json",
    app: Celeriac | None = None,
) -> None:
    """Register the signing serializer that ``task_serializer`` names (Celery's function).

    As in Celery, ``task_serializer`` must be the signing serializer and ``accept_content``
    exactly ``[it]``, so that a worker runs nothing unsigned; nothing else in the settings
    is changed (sign results or events too by setting ``result_serializer`` or
    ``event_serializer`` to it). For ``auth``, ``key``, ``key_password``, ``cert`` and
    ``store`` default to their ``security_*`` settings; ``hmac`` takes its secret from
    ``security_hmac_key`` only. ``digest`` defaults to ``security_digest``, and
    ``serializer`` is what the signed content is serialized with, on both sides (a message
    signed over other content is refused). ``allowed_serializers`` is accepted for
    compatibility and changes nothing: Celery disables every other decoder process-wide,
    while celeriac checks each decode against ``accept_content`` or
    ``result_accept_content`` already.

    Raises:
        ImproperlyConfigured: a setting is missing or wrong, or a file cannot be read.
        SecurityError: a key or certificate cannot be used.
    """
    app = app or get_current_app()
    conf = app.conf
    name = conf.task_serializer
    accept = list(conf.accept_content)
    if name not in SIGNING_SERIALIZERS or accept != [name]:
        raise ImproperlyConfigured(
            "message signing needs task_serializer='auth' and accept_content=['auth'] (or"
            " 'hmac' and ['hmac']), so that workers sign what they send and run nothing"
            f" unsigned; they are {name!r} and {accept!r}"
        )
    if serializer in SIGNING_SERIALIZERS:
        raise ImproperlyConfigured(f"setup_security: serializer {serializer!r} cannot sign itself")
    max_age = conf.security_max_age
    if max_age is not None and max_age <= 0:
        raise ImproperlyConfigured(f"security_max_age must be positive or None, not {max_age!r}")
    signer: Signer
    if name == "auth":
        signer = _certificate_signer(conf, key, key_password, cert, store, digest)
    else:
        signer = _shared_secret_signer(conf, digest)
    signed = SignedSerializer(
        signer, inner=serializer, max_age=max_age, requires_seal=name == "hmac"
    )
    register_signed_serializer(name, signed)


def _certificate_signer(
    conf: Settings,
    key: str | None,
    key_password: str | bytes | None,
    cert: str | None,
    store: str | None,
    digest: str | None,
) -> Signer:
    key = key or conf.security_key
    cert = cert or conf.security_certificate
    store = store or conf.security_cert_store
    if not (key and cert and store):
        raise ImproperlyConfigured(
            "the auth serializer needs the security_key, security_certificate and"
            " security_cert_store settings (files of the private key, its certificate, and"
            " the certificates trusted to sign)"
        )
    try:
        from celeriac.security import certificate
    except ImportError as exc:
        raise ImproperlyConfigured(
            "the auth serializer needs the 'cryptography' package: pip install 'celeriac[auth]'"
        ) from exc
    return certificate.CertificateSigner(
        certificate.load_private_key(key, key_password or conf.security_key_password),
        certificate.load_certificate(cert),
        certificate.load_certificate_store(store),
        digest or conf.security_digest,
    )


def _shared_secret_signer(conf: Settings, digest: str | None) -> Signer:
    secret = conf.security_hmac_key
    if not secret:
        raise ImproperlyConfigured("the hmac serializer needs the security_hmac_key setting")
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    return SharedSecretSigner(secret, digest or conf.security_digest)

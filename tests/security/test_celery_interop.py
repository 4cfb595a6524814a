"""Celery's own auth serializer (celery.security, run in this process) and celeriac's read
each other's signed task bodies, given the same keys and certificates."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SecurityError as CelerySecurityError
from celery.security.certificate import Certificate, FSCertStore
from celery.security.key import PrivateKey
from celery.security.serialization import SecureSerializer

from celeriac import Celeriac
from celeriac.protocol.envelope import Envelope
from celeriac.protocol.message import parse_task_message
from celeriac.security import SignatureError
from celeriac.security.seal import SEAL_KEY
from tests.security.credentials import Identity, make_identity, make_store
from tests.security.forgery import signed_message, with_body_bytes_replaced, with_header

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@pytest.fixture(scope="module")
def alice(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return make_identity(tmp_path_factory.mktemp("alice"), "alice")


@pytest.fixture(scope="module")
def store(alice: Identity) -> Path:
    return make_store(alice.key_path.parent / "store", alice)


@pytest.fixture
def celery_auth(alice: Identity, store: Path) -> Any:
    """Celery's auth serializer with alice's key, as ``register_auth`` builds it."""
    return SecureSerializer(
        PrivateKey(alice.key_pem.decode()),
        Certificate(alice.certificate_path.read_text()),
        FSCertStore(str(store)),
        digest="sha256",
        serializer="json",
    )


@pytest.fixture(autouse=True)
def celeriac_auth(alice: Identity, store: Path) -> None:
    """celeriac's auth serializer with the same key, certificate and store."""
    app = Celeriac("interop", broker="memory://")
    app.conf.update(
        task_serializer="auth",
        accept_content=["auth"],
        security_key=str(alice.key_path),
        security_certificate=str(alice.certificate_path),
        security_cert_store=str(store),
    )
    app.setup_security()


def celery_signed_message(celery_auth: Any, args: list[Any]) -> Envelope:
    """A task message whose body Celery's auth serializer signed, as a Celery client sends."""
    task_id = str(uuid.uuid4())
    body = celery_auth.serialize([args, {}, EMBED])
    headers = {"lang": "py", "task": "proj.add", "id": task_id, "root_id": task_id}
    return Envelope(body.encode(), "application/data", "utf-8", headers)


def test_a_body_celery_signed_verifies_in_celeriac(celery_auth: Any) -> None:
    envelope = celery_signed_message(celery_auth, [20, 22])

    assert parse_task_message(envelope).decode_body(["auth"]) == ([20, 22], {}, EMBED)


def test_celery_signs_the_body_only_so_its_headers_are_not_covered(celery_auth: Any) -> None:
    envelope = with_header(celery_signed_message(celery_auth, [20, 22]), "task", "proj.other")

    assert parse_task_message(envelope).decode_body(["auth"])[0] == [20, 22]


def test_a_celery_signed_body_that_was_altered_is_refused(celery_auth: Any) -> None:
    envelope = celery_signed_message(celery_auth, [20, 22])
    forged = with_body_bytes_replaced(envelope, b"[20, 22]", b"[20, 99]")

    with pytest.raises(SignatureError, match="bad signature"):
        parse_task_message(forged).decode_body(["auth"])


def test_a_body_celeriac_signed_verifies_in_celery_with_the_seal_as_an_extra_key(
    celery_auth: Any,
) -> None:
    envelope = signed_message("auth", "proj.add", (20, 22))

    args, kwargs, embed = celery_auth.deserialize(envelope.body.decode())

    assert (args, kwargs) == ([20, 22], {})
    assert embed.pop(SEAL_KEY)["headers"] == sorted(envelope.headers)
    assert embed == EMBED


def test_a_body_celeriac_signed_and_then_altered_is_refused_by_celery(celery_auth: Any) -> None:
    envelope = signed_message("auth", "proj.add", (20, 22))
    forged = with_body_bytes_replaced(envelope, b"[20, 22]", b"[20, 99]")

    # Celery 5.7 means to say "Bad signature"; its error wrapper fails first, still refusing.
    with pytest.raises(CelerySecurityError, match="Unable to deserialize"):
        celery_auth.deserialize(forged.body.decode())

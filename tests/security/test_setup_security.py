"""app.setup_security(): Celery's checks, the two signing serializers, and task messages
signed by one app and checked where their body is decoded."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.exceptions import ContentDisallowed, ImproperlyConfigured, SecurityError
from celeriac.protocol.envelope import Envelope
from celeriac.protocol.message import build_task_message, parse_task_message
from celeriac.security import SignatureError
from celeriac.security.certificate import (
    CertificateSigner,
    load_certificate,
    load_certificate_store,
    load_private_key,
)
from celeriac.security.serializer import SignedSerializer
from celeriac.security.shared_secret import SharedSecretSigner
from celeriac.security.signer import Signer
from celeriac.serialization import dumps, loads
from tests.security.credentials import Identity, make_identity, make_store
from tests.security.forgery import (
    signed_by,
    signed_message,
    with_body_bytes_replaced,
    with_header,
)

HOUR = 3600.0


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("setup")


@pytest.fixture(scope="module")
def alice(folder: Path) -> Identity:
    return make_identity(folder, "alice", password=b"alice's password")


@pytest.fixture(scope="module")
def mallory(folder: Path) -> Identity:
    return make_identity(folder, "mallory")


@pytest.fixture(scope="module")
def store(folder: Path, alice: Identity) -> Path:
    return make_store(folder / "store", alice)


def auth_app(alice: Identity, store: Path) -> Celeriac:
    app = Celeriac("signer", broker="memory://")
    app.conf.update(
        task_serializer="auth",
        accept_content=["auth"],
        security_key=str(alice.key_path),
        security_key_password=b"alice's password",
        security_certificate=str(alice.certificate_path),
        security_cert_store=str(store),
    )
    return app


def hmac_app(secret: str) -> Celeriac:
    app = Celeriac("signer", broker="memory://")
    app.conf.update(task_serializer="hmac", accept_content=["hmac"], security_hmac_key=secret)
    return app


def run_body(envelope: Envelope, accept: list[str]) -> tuple[list[Any], Any, Any]:
    """Decode a task message's body as the process that runs the task does."""
    return parse_task_message(envelope).decode_body(accept)


# ---- Celery's checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("serializer", "accept"),
    [("json", ["json"]), ("auth", ["json"]), ("auth", ["auth", "json"]), ("hmac", ["auth"])],
)
def test_signing_needs_the_signing_serializer_and_only_it_accepted(
    serializer: str, accept: list[str]
) -> None:
    app = Celeriac("signer", broker="memory://")
    app.conf.update(task_serializer=serializer, accept_content=accept)

    with pytest.raises(ImproperlyConfigured, match="task_serializer='auth' and accept_content"):
        app.setup_security()


def test_auth_needs_a_key_a_certificate_and_a_store() -> None:
    app = Celeriac("signer", broker="memory://")
    app.conf.update(task_serializer="auth", accept_content=["auth"], security_key="k.pem")

    with pytest.raises(ImproperlyConfigured, match="security_certificate and security_cert_store"):
        app.setup_security()


def test_hmac_needs_a_secret() -> None:
    app = Celeriac("signer", broker="memory://")
    app.conf.update(task_serializer="hmac", accept_content=["hmac"])

    with pytest.raises(ImproperlyConfigured, match="needs the security_hmac_key setting"):
        app.setup_security()


def test_the_signed_content_cannot_be_signed_itself() -> None:
    with pytest.raises(ImproperlyConfigured, match="serializer 'hmac' cannot sign itself"):
        hmac_app(secrets.token_hex(32)).setup_security(serializer="hmac")


@pytest.mark.parametrize("max_age", [0, -5])
def test_max_age_must_be_positive(max_age: float) -> None:
    app = hmac_app(secrets.token_hex(32))
    app.conf.security_max_age = max_age

    with pytest.raises(ImproperlyConfigured, match="security_max_age must be positive"):
        app.setup_security()


def test_arguments_override_the_settings(alice: Identity, store: Path) -> None:
    app = Celeriac("signer", broker="memory://")
    app.conf.update(task_serializer="auth", accept_content=["auth"])

    app.setup_security(
        key=str(alice.key_path),
        key_password=b"alice's password",
        cert=str(alice.certificate_path),
        store=str(store),
        digest="sha512",
    )

    envelope = signed_message("auth", "proj.add", (20, 22))
    assert run_body(envelope, ["auth"])[0] == [20, 22]


# ---- messages signed and checked ------------------------------------------------------


def test_an_auth_signed_task_message_decodes_where_it_runs(alice: Identity, store: Path) -> None:
    auth_app(alice, store).setup_security()

    envelope = signed_message("auth", "proj.add", (20, 22))

    assert envelope.content_type == "application/data"
    assert run_body(envelope, ["auth"]) == (
        [20, 22],
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    )


def test_an_hmac_signed_task_message_decodes_where_it_runs() -> None:
    hmac_app(secrets.token_hex(32)).setup_security()

    envelope = signed_message("hmac", "proj.add", (20, 22))

    assert envelope.content_type == "application/x-celeriac-hmac"
    assert run_body(envelope, ["hmac"])[0] == [20, 22]


def test_a_compressed_signed_message_decodes(alice: Identity, store: Path) -> None:
    auth_app(alice, store).setup_security()

    envelope = build_task_message(
        "proj.add", "c1", (1, 2), {}, serializer="auth", compression="zlib"
    )

    assert envelope.headers["compression"] == "application/x-gzip"
    assert run_body(envelope, ["auth"])[0] == [1, 2]


@pytest.mark.parametrize("mode", ["auth", "hmac"])
def test_each_forgery_is_refused_where_the_body_is_decoded(
    mode: str, alice: Identity, mallory: Identity, store: Path, folder: Path
) -> None:
    stranger: Signer
    own: Signer
    if mode == "auth":
        auth_app(alice, store).setup_security()
        stranger = CertificateSigner(
            load_private_key(str(mallory.key_path), None),
            load_certificate(str(mallory.certificate_path)),
            load_certificate_store(str(make_store(folder / "mallory", mallory))),
        )
        own = CertificateSigner(
            load_private_key(str(alice.key_path), b"alice's password"),
            load_certificate(str(alice.certificate_path)),
            load_certificate_store(str(store)),
        )
    else:
        secret = secrets.token_hex(32)
        hmac_app(secret).setup_security()
        stranger = SharedSecretSigner(secrets.token_bytes(32))
        own = SharedSecretSigner(secret.encode())
    good = signed_message(mode, "proj.add", (20, 22))
    two_hours_ago = SignedSerializer(own, now=lambda: time.time() - 2 * HOUR)
    forgeries = {
        "headers were changed": with_header(good, "task", "proj.delete_everything"),
        "bad signature": with_body_bytes_replaced(good, b"[20, 22]", b"[20, 99]"),
        "unknown": signed_by(SignedSerializer(stranger), "proj.add", (20, 22)),
        "security_max_age=3600 s": signed_by(two_hours_ago, "proj.add", (20, 22)),
    }

    for reason, forged in forgeries.items():
        with pytest.raises(SignatureError, match=reason):
            run_body(forged, [mode])
    assert run_body(good, [mode])[0] == [20, 22]


def test_unsigned_content_stays_refused_by_accept_content() -> None:
    hmac_app(secrets.token_hex(32)).setup_security()
    unsigned = signed_message("json", "proj.add", (20, 22))

    with pytest.raises(ContentDisallowed):
        run_body(unsigned, ["hmac"])


def test_results_and_events_sign_their_value_without_a_seal() -> None:
    hmac_app(secrets.token_hex(32)).setup_security()
    meta = {"status": "SUCCESS", "result": 42, "task_id": "t1"}

    content_type, encoding, data = dumps(meta, "hmac")

    assert loads(data, content_type, encoding, accept=["hmac"]) == meta
    with pytest.raises(SignatureError, match="bad signature"):
        loads(
            data.replace(b'"result": 42', b'"result": 43'), content_type, encoding, accept=["hmac"]
        )


# ---- no credentials in errors ---------------------------------------------------------


def test_a_wrong_key_password_is_refused_without_saying_it(alice: Identity, store: Path) -> None:
    app = auth_app(alice, store)
    app.conf.security_key_password = b"not alice's password"

    with pytest.raises(SecurityError, match="cannot load the private key") as refused:
        app.setup_security()

    assert "alice's password" not in str(refused.value)
    assert "BEGIN" not in str(refused.value)


def test_a_short_hmac_key_is_refused_without_saying_it() -> None:
    with pytest.raises(ImproperlyConfigured, match="at least 32") as refused:
        hmac_app("swordfish").setup_security()

    assert "swordfish" not in str(refused.value)

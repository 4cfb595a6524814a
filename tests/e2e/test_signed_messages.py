"""Signed task messages on a real worker (``signedproj``), on SQLite and on Redis.

Signed tasks run, retries the worker signs itself included. Each forgery an attacker with
write access to the broker could make (a changed header, a changed body, a message signed
by a key the worker does not trust, a replay older than security_max_age) is refused: the
worker logs the reason, sends task_rejected, dead-letters the message with the reason and
stores FAILURE for its id; a good task sent after each still runs, and no secret appears
in the worker's log or in ``inspect conf``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.protocol.envelope import Envelope
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
from celeriac.transports.base import DEAD_LETTER_REASON_HEADER, dead_letter_queue
from tests.e2e.conftest import Broker, WorkerProcess, wait_for
from tests.security.credentials import make_identity, make_store
from tests.security.forgery import (
    signed_by,
    signed_message,
    with_body_bytes_replaced,
    with_header,
)

pytestmark = pytest.mark.slow
StartWorker = Callable[..., WorkerProcess]
TWO_HOURS = 7200.0
PASSWORD = "a password for the test key"


@dataclass(frozen=True)
class Credentials:
    """One mode's credentials: the worker's environment, the client's settings, the
    secrets that must never show, and signers the worker does not trust or that are old."""

    mode: str
    environment: dict[str, str]
    settings: dict[str, Any]
    secrets: list[str]
    stranger: Signer
    own: Signer


def auth_credentials(folder: Path) -> Credentials:
    trusted = make_identity(folder, "client", password=PASSWORD.encode())
    stranger = make_identity(folder, "stranger")
    store = make_store(folder / "store", trusted)
    settings = {
        "security_key": str(trusted.key_path),
        "security_key_password": PASSWORD,
        "security_certificate": str(trusted.certificate_path),
        "security_cert_store": str(store),
    }
    return Credentials(
        mode="auth",
        environment={
            "SIGNEDPROJ_KEY": settings["security_key"],
            "SIGNEDPROJ_KEY_PASSWORD": PASSWORD,
            "SIGNEDPROJ_CERTIFICATE": settings["security_certificate"],
            "SIGNEDPROJ_CERT_STORE": settings["security_cert_store"],
        },
        settings=settings,
        secrets=[PASSWORD, trusted.key_pem.decode().splitlines()[1], "PRIVATE KEY"],
        stranger=CertificateSigner(
            load_private_key(str(stranger.key_path), None),
            load_certificate(str(stranger.certificate_path)),
            load_certificate_store(str(make_store(folder / "stranger", stranger))),
        ),
        own=CertificateSigner(
            load_private_key(str(trusted.key_path), PASSWORD),
            load_certificate(str(trusted.certificate_path)),
            load_certificate_store(str(store)),
        ),
    )


def hmac_credentials(folder: Path) -> Credentials:
    secret = secrets.token_bytes(32)
    return Credentials(
        mode="hmac",
        environment={"SIGNEDPROJ_HMAC_KEY": secret.hex()},
        settings={"security_hmac_key": secret},
        secrets=[secret.hex(), repr(secret)[2:-1]],
        stranger=SharedSecretSigner(secrets.token_bytes(32)),
        own=SharedSecretSigner(secret),
    )


@pytest.fixture(params=["auth", "hmac"])
def credentials(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Credentials:
    """Each mode's credentials, made for this test, in the environment the worker gets."""
    make = auth_credentials if request.param == "auth" else hmac_credentials
    made = make(tmp_path / "keys")
    monkeypatch.setenv("SIGNEDPROJ_MODE", made.mode)
    for name, value in made.environment.items():
        monkeypatch.setenv(name, value)
    return made


@pytest.fixture
def signed_client(broker: Broker, credentials: Credentials) -> Iterator[Celeriac]:
    """An app in the test process that signs as the worker's clients do."""
    app = Celeriac("client", broker=broker.url, backend=broker.backend)
    app.conf.broker_transport_options = broker.options
    app.conf.update(
        task_serializer=credentials.mode,
        accept_content=[credentials.mode],
        result_accept_content=["json"],
        **credentials.settings,
    )
    app.setup_security()
    yield app
    app.close()


def forgeries(credentials: Credentials) -> dict[str, Envelope]:
    """Each forgery, by a phrase of the reason it must be refused with; each has its own id."""

    def good() -> Envelope:
        return signed_message(credentials.mode, "signedproj.add", (20, 22))

    two_hours_ago = SignedSerializer(credentials.own, now=lambda: time.time() - TWO_HOURS)
    return {
        "headers were changed after signing": with_header(good(), "task", "signedproj.mul"),
        "bad signature": with_body_bytes_replaced(good(), b"[20, 22]", b"[20, 99]"),
        "unknown": signed_by(SignedSerializer(credentials.stranger), "signedproj.add", (20, 22)),
        "security_max_age=3600 s": signed_by(two_hours_ago, "signedproj.add", (20, 22)),
    }


def dead_letter_reasons(client: Celeriac, count: int) -> list[str]:
    """The reasons of the ``count`` messages the worker dead-lettered from ``celery``."""
    dead_letters = dead_letter_queue("celery")
    assert wait_for(lambda: client.transport.queue_size(dead_letters) == count)
    deliveries = client.transport.fetch([dead_letters], count, 1.0)
    return [delivery.envelope.headers[DEAD_LETTER_REASON_HEADER] for delivery in deliveries]


def signals_sent(worker: WorkerProcess, name: str) -> list[dict[str, Any]]:
    lines = worker.signal_log.read_text().splitlines() if worker.signal_log.exists() else []
    return [record for record in map(json.loads, lines) if record["signal"] == name]


@pytest.mark.parametrize("broker", ["sqlite", "redis"], indirect=True)
def test_signed_tasks_run_and_every_forgery_is_refused_while_the_worker_goes_on(
    start_worker: StartWorker, signed_client: Celeriac, credentials: Credentials
) -> None:
    worker = start_worker(app="signedproj")
    client = signed_client

    assert client.send_task("signedproj.add", (20, 22)).get(timeout=10) == 42
    assert client.send_task("signedproj.add_after_a_retry", (1, 2)).get(timeout=10) == 3
    forged = forgeries(credentials)
    for reason, envelope in forged.items():
        client.transport.publish("celery", envelope)
        with pytest.raises(SignatureError, match=reason):
            client.AsyncResult(envelope.headers["id"]).get(timeout=10)
        assert client.send_task("signedproj.add", (1, 1)).get(timeout=10) == 2, reason

    reasons = dead_letter_reasons(client, len(forged))
    for reason in forged:
        assert any(reason in dead for dead in reasons), (reason, reasons)
        assert reason in worker.log()
    rejected = signals_sent(worker, "task_rejected")
    assert sorted(record["task_id"] for record in rejected) == sorted(
        envelope.headers["id"] for envelope in forged.values()
    )
    assert {record["pid"] for record in rejected} == {worker.pid}
    assert all(record["exc"].startswith("SignatureError: ") for record in rejected)
    assert signals_sent(worker, "task_internal_error") == []
    assert worker.process.poll() is None
    inspect = client.control.inspect(timeout=2.0)
    conf, report = inspect.conf(), inspect.report()
    assert conf, "the worker did not answer inspect conf"
    shown = worker.log() + json.dumps(conf) + json.dumps(report)
    for secret in credentials.secrets:
        assert secret not in shown


@pytest.mark.parametrize("broker", ["sqlite", "redis"], indirect=True)
@pytest.mark.parametrize("credentials", ["auth"], indirect=True)
def test_a_task_celery_signed_runs_on_the_worker(
    start_worker: StartWorker, signed_client: Celeriac, credentials: Credentials
) -> None:
    from celery.security.certificate import Certificate, FSCertStore
    from celery.security.key import PrivateKey
    from celery.security.serialization import SecureSerializer

    settings = credentials.settings
    celery_auth = SecureSerializer(
        PrivateKey(Path(settings["security_key"]).read_text(), password=PASSWORD),
        Certificate(Path(settings["security_certificate"]).read_text()),
        FSCertStore(settings["security_cert_store"]),
        digest="sha256",
        serializer="json",
    )
    start_worker(app="signedproj")
    task_id = "celery-signed"
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = celery_auth.serialize([[20, 22], {}, embed]).encode()
    headers = {"lang": "py", "task": "signedproj.add", "id": task_id, "root_id": task_id}

    signed_client.transport.publish("celery", Envelope(body, "application/data", "utf-8", headers))

    assert signed_client.AsyncResult(task_id).get(timeout=10) == 42

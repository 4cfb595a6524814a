"""A tasks module whose app signs its task messages and runs only signed ones.

SIGNEDPROJ_MODE names the signing serializer (``auth`` or ``hmac``); the credentials the
test made come through the environment: the key, certificate and store files and the key's
password for ``auth``, the shared secret (hex) for ``hmac``. Both secrets are given as
bytes, so ``inspect conf`` shows them masked. The signals a refusal sends are logged to
SIGNAL_LOG, one JSON line each, as ``sigproj`` logs its own.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celeriac import Celeriac, signals

app = Celeriac(
    "signedproj",
    broker=os.environ["SIGPROJ_BROKER"],
    backend=os.environ.get("SIGPROJ_BACKEND") or None,
)
app.conf.broker_transport_options = {
    "lease_seconds": 2.0,
    **json.loads(os.environ.get("SIGPROJ_TRANSPORT_OPTIONS") or "{}"),
}
MODE = os.environ["SIGNEDPROJ_MODE"]
app.conf.update(task_serializer=MODE, accept_content=[MODE], result_accept_content=["json"])
if MODE == "auth":
    app.conf.update(
        security_key=os.environ["SIGNEDPROJ_KEY"],
        security_key_password=os.environ["SIGNEDPROJ_KEY_PASSWORD"].encode(),
        security_certificate=os.environ["SIGNEDPROJ_CERTIFICATE"],
        security_cert_store=os.environ["SIGNEDPROJ_CERT_STORE"],
    )
else:
    app.conf.security_hmac_key = bytes.fromhex(os.environ["SIGNEDPROJ_HMAC_KEY"])
app.setup_security()


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task(bind=True)
def add_after_a_retry(self: Any, x: int, y: int) -> int:
    """Fail once: the retry is a message the worker itself signs."""
    if self.request.retries == 0:
        raise self.retry(countdown=0.1)
    return x + y


def record(signal: str, **fields: Any) -> None:
    """Append one JSON line about a signal to the SIGNAL_LOG file."""
    path = os.environ.get("SIGNAL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"signal": signal, "pid": os.getpid(), **fields}) + "\n")


@signals.worker_ready.connect
def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    record("worker_ready")


@signals.task_rejected.connect
def on_task_rejected(sender: Any = None, message: Any = None, exc: Any = None, **kw: Any) -> None:
    record("task_rejected", exc=f"{type(exc).__name__}: {exc}", task_id=message.headers.get("id"))


@signals.task_internal_error.connect
def on_task_internal_error(sender: Any = None, task_id: Any = None, **kwargs: Any) -> None:
    record("task_internal_error", task_id=task_id)

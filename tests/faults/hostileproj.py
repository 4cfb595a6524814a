"""The app the hostile-input battery runs a worker of: signed messages, and plain JSON too.

Its messages are signed with a shared secret (``hmac``), so forgeries can be tried on it,
and, unlike a production set-up, it also accepts unsigned JSON, so that the hostile inputs
reach the JSON decoder and the header checks rather than all being refused as unsigned.
Read from the environment: ``HOSTILEPROJ_BROKER``, ``HOSTILEPROJ_BACKEND``,
``HOSTILEPROJ_TRANSPORT_OPTIONS`` (JSON), ``HOSTILEPROJ_HMAC_KEY`` (hex) and
``SIGNAL_LOG``, where the refusal signals go, one JSON line each.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celeriac import Celeriac, signals

app = Celeriac(
    "hostileproj",
    broker=os.environ["HOSTILEPROJ_BROKER"],
    backend=os.environ.get("HOSTILEPROJ_BACKEND") or None,
)
app.conf.broker_transport_options = json.loads(
    os.environ.get("HOSTILEPROJ_TRANSPORT_OPTIONS") or "{}"
)
app.conf.update(
    task_serializer="hmac",
    accept_content=["hmac"],
    result_accept_content=["json"],
    security_hmac_key=bytes.fromhex(os.environ["HOSTILEPROJ_HMAC_KEY"]),
)
app.setup_security()
app.conf.accept_content = ["hmac", "json"]


class Opaque:
    """A value no serializer can encode and whose repr fails as well."""

    def __repr__(self) -> str:
        raise RuntimeError("this object refuses to be shown")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def return_unserializable() -> object:
    return Opaque()


@app.task
def raise_unserializable() -> None:
    raise ValueError(Opaque())


def record(signal: str, **fields: Any) -> None:
    """Append one JSON line about a signal to the SIGNAL_LOG file."""
    with open(os.environ["SIGNAL_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"signal": signal, "pid": os.getpid(), **fields}) + "\n")


@signals.worker_ready.connect
def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    record("worker_ready")


@signals.task_rejected.connect
def on_task_rejected(sender: Any = None, message: Any = None, exc: Any = None, **kw: Any) -> None:
    record("task_rejected", exc=f"{type(exc).__name__}")


@signals.task_unknown.connect
def on_task_unknown(sender: Any = None, id: Any = None, **kwargs: Any) -> None:
    record("task_unknown", task_id=id)


@signals.task_internal_error.connect
def on_task_internal_error(sender: Any = None, task_id: Any = None, **kwargs: Any) -> None:
    record("task_internal_error", task_id=task_id)

"""Hostile task messages: what a broken client or an attacker with write access might queue.

Shared by the raw-message end-to-end tests and the fault battery. Each message carries the
signal a worker must send for it, a phrase of the reason it must be refused with, and the
task id whose FAILURE must be stored (None when the id itself is unreadable). Bodies are
built once per process: the compression bombs take a second or two to make.
``refuse_then_run_a_good_task`` is the check both make of each message.
"""

from __future__ import annotations

import datetime
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celeriac import Celeriac, states
from celeriac.protocol.envelope import Envelope
from celeriac.serialization import compress
from celeriac.transports.base import DEAD_LETTER_REASON_HEADER, dead_letter_queue
from tests.e2e.conftest import wait_for

# Larger than worker_max_message_size's default of 64 MiB, as the issue asks.
HUGE_BODY_SIZE = 100 * 1000 * 1000
# What a bomb expands to: past the 64 MiB default, from a body of a few kilobytes at most.
BOMB_SIZE = 80 * 1024 * 1024
DEPTH = 100_000
JSON = "application/json"


@dataclass(frozen=True)
class HostileMessage:
    """One message to put on a queue as it is, and how the worker must answer it."""

    name: str
    body: bytes
    headers: dict[str, Any]
    signal: str
    reason: str
    content_type: str = JSON
    content_encoding: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    # What the worker's log says of it, when not the reason itself.
    logged: str | None = None
    # RabbitMQ closes the channel of a publisher whose headers hold NaN or infinity, so
    # such a message never reaches a worker there.
    reaches_rabbitmq: bool = True

    @property
    def task_id(self) -> str | None:
        """The id whose FAILURE must be stored, if the message has a readable one."""
        task_id = self.headers.get("id")
        return task_id if isinstance(task_id, str) else None

    @classmethod
    def from_envelope(
        cls, name: str, envelope: Envelope, signal: str, reason: str
    ) -> HostileMessage:
        """A message built elsewhere (a forgery, say), sent as it is."""
        return cls(
            name,
            envelope.body,
            envelope.headers,
            signal,
            reason,
            envelope.content_type,
            envelope.content_encoding,
            envelope.properties,
        )

    def envelope(self) -> Envelope:
        encoding = self.content_encoding or ("utf-8" if self.content_type == JSON else "binary")
        return Envelope(
            self.body, self.content_type, encoding, dict(self.headers), dict(self.properties)
        )


def task_headers(task: str, task_id: str, **extra: Any) -> dict[str, Any]:
    """Protocol 2 headers as a client sends them, with ``extra`` over them."""
    return {"lang": "py", "task": task, "id": task_id, "root_id": task_id, **extra}


def json_body(args: list[Any]) -> bytes:
    """A well-formed ``[args, kwargs, embed]`` JSON body."""
    return json.dumps([args, {}, {}]).encode()


@functools.cache
def _bomb(method: str) -> bytes:
    payload = b"[[" + b" " * BOMB_SIZE + b"], {}, {}]"
    return compress(payload, method)[0]


@functools.cache
def _huge_body() -> bytes:
    return b"[[" + b"1," * (HUGE_BODY_SIZE // 2) + b"1], {}, {}]"


def hostile_messages(task: str, prefix: str, *, huge: bool = True) -> list[HostileMessage]:
    """Every hostile input of the reliability issue's item 5, aimed at the known ``task``.

    Task ids start with ``prefix``, so runs on several brokers never share one. ``huge``
    includes the 100 MB body. A test on RabbitMQ leaves out those that cannot reach it.
    """

    def headers(name: str, **extra: Any) -> dict[str, Any]:
        return task_headers(task, f"{prefix}-{name}", **extra)

    far_future = datetime.datetime(9999, 12, 31, 23, 59, tzinfo=datetime.UTC).isoformat()
    rejected, internal = "task_rejected", "task_internal_error"
    valid = json_body([1, 2])
    messages = [
        HostileMessage("malformed-json", b'[[1, 2], {"x": ', headers("json"), internal,
                       "DecodeError"),
        HostileMessage("body-not-a-task", b'{"hello": "not a task"}',
                       {"id": f"{prefix}-v1"}, rejected, "not a protocol 1 task"),
        HostileMessage("missing-id", valid, {"lang": "py", "task": task}, rejected,
                       "no valid 'id' header"),
        HostileMessage("id-an-int", valid, {"lang": "py", "task": task, "id": 42},
                       rejected, "no valid 'id' header"),
        HostileMessage("task-a-list", valid,
                       {"lang": "py", "task": [task], "id": f"{prefix}-task-list"}, rejected,
                       "no valid 'task' header"),
        HostileMessage("retries-a-string", valid, headers("retries", retries="3"),
                       rejected, "header 'retries' is not an integer"),
        HostileMessage("timelimit-nonsense", valid, headers("tl", timelimit="forever"),
                       rejected, "header 'timelimit' is not [hard, soft]"),
        HostileMessage("timelimit-negative", valid, headers("tl-neg", timelimit=[-5, 1]),
                       rejected, "header 'timelimit' holds -5"),
        HostileMessage("timelimit-nan", valid,
                       headers("tl-nan", timelimit=[None, float("nan")]), rejected,
                       "header 'timelimit' holds nan", reaches_rabbitmq=False),
        HostileMessage("unknown-task", valid,
                       task_headers("nobody.has_it", f"{prefix}-unknown"), "task_unknown",
                       "NotRegistered", logged="unregistered task of type 'nobody.has_it'"),
        HostileMessage("pickle-not-accepted", b"\x80\x04K\x01.", headers("pickle"), rejected,
                       "ContentDisallowed", content_type="application/x-python-serialize"),
        HostileMessage("deep-json", b"[" * DEPTH + b"]" * DEPTH, headers("deep"), internal,
                       "maximum recursion depth"),
        HostileMessage("eta-unparsable", valid, headers("eta-word", eta="tomorrow"),
                       rejected, "header 'eta' is not an ISO-8601 time"),
        HostileMessage("eta-year-9999", valid, headers("eta-9999", eta=far_future),
                       rejected, "header 'eta' is out of range"),
        HostileMessage("expires-year-1", valid,
                       headers("expires-1", expires="0001-01-01T00:00:00+05:00"), rejected,
                       "header 'expires' is out of range"),
        HostileMessage("eta-nan", valid, headers("eta-nan", eta=float("nan")), rejected,
                       "header 'eta' is not an ISO-8601 time", reaches_rabbitmq=False),
        HostileMessage("expires-inf", valid,
                       headers("expires-inf", expires=float("inf")), rejected,
                       "header 'expires' is not an ISO-8601 time", reaches_rabbitmq=False),
    ]  # fmt: skip
    for method in ("zlib", "bz2", "lzma"):
        bomb = _bomb(method)
        mime = compress(b"", method)[1]
        messages.append(
            HostileMessage(f"{method}-bomb", bomb, headers(f"{method}-bomb", compression=mime),
                           internal, "decompression stopped there")
        )  # fmt: skip
    if huge:
        messages.append(
            HostileMessage("100-mb-body", _huge_body(), headers("huge"), rejected,
                           "exceeds worker_max_message_size")
        )  # fmt: skip
    return messages


def refuse_then_run_a_good_task(
    client: Celeriac,
    message: HostileMessage,
    count: int,
    sent: Callable[[str], int],
    good_task: str,
) -> None:
    """Send ``message`` and then ``good_task`` (an ``add``) to ``celery``: the good task
    runs, ``message`` is the ``count``-th dead letter, its signal is sent (``sent`` counts
    the records of a signal) and its readable id gets FAILURE."""
    before = sent(message.signal)
    client.transport.publish("celery", message.envelope())

    assert client.send_task(good_task, (20, 22)).get(timeout=30) == 42, message.name
    dead_letters = dead_letter_queue("celery")
    assert wait_for(lambda: client.transport.queue_size(dead_letters) == count, 30), message.name
    assert wait_for(lambda: sent(message.signal) > before), message.name
    if message.task_id is not None:
        result = client.AsyncResult(message.task_id)
        assert wait_for(lambda: result.state == states.FAILURE), message.name


def dead_letter_reasons(client: Celeriac, count: int) -> list[str]:
    """The reasons of the ``count`` messages dead-lettered from ``celery``."""
    reasons: list[str] = []
    deadline = time.monotonic() + 30
    while len(reasons) < count and time.monotonic() < deadline:
        deliveries = client.transport.fetch([dead_letter_queue("celery")], count - len(reasons), 1)
        reasons += [delivery.envelope.headers[DEAD_LETTER_REASON_HEADER] for delivery in deliveries]
    return reasons

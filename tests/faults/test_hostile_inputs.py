"""Every hostile input and every forgery, each followed by a good task, on every broker.

One ``hostileproj`` worker per broker takes them all in turn: the hostile inputs of
``tests/e2e/hostile.py`` (malformed JSON, wrong-typed headers, an unknown task, pickle, a
100 MB body, compression bombs, JSON nested 100,000 deep, absurd times), the forgeries of
a signed message (a changed header, a changed body, an unknown key, a replay older than
``security_max_age``), and tasks whose exception or return value cannot be stored. Each
refused message is logged with its reason, sends its signal, is dead-lettered and, when
its id can be read, gets FAILURE; each good task after it runs; the worker's main process
never changes; and neither the shared secret nor the broker's password shows in its log.
The battery row counts every input as refused, the two tasks that fail for want of a
storable outcome among them.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from celeriac import Celeriac
from celeriac.exceptions import EncodeError
from celeriac.protocol.envelope import Envelope
from celeriac.security.serializer import SignedSerializer
from celeriac.security.shared_secret import SharedSecretSigner
from tests.e2e.conftest import wait_for
from tests.e2e.hostile import (
    HostileMessage,
    dead_letter_reasons,
    hostile_messages,
    refuse_then_run_a_good_task,
)
from tests.faults.battery import record_row
from tests.faults.support import BROKERS, FaultBroker, fault_broker
from tests.security.forgery import signed_by, signed_message, with_body_bytes_replaced, with_header

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

SCENARIO = "hostile inputs and forgeries, each followed by a good task"
HERE = Path(__file__).parent
TWO_HOURS = 7200.0


@dataclass
class HostileWorker:
    """A running ``hostileproj`` worker: its process, log and signal records."""

    process: subprocess.Popen[bytes]
    log: Path
    signal_log: Path

    def signals(self, name: str) -> list[dict[str, Any]]:
        if not self.signal_log.exists():
            return []
        records = map(json.loads, self.signal_log.read_text().splitlines())
        return [record for record in records if record["signal"] == name]

    def sent(self, name: str) -> int:
        """How many times the worker's processes sent signal ``name``."""
        return len(self.signals(name))


@contextmanager
def hostileproj_worker(broker: FaultBroker, folder: Path, secret: bytes) -> Iterator[HostileWorker]:
    """Run ``celeriac -A hostileproj worker`` until the block ends, then kill it by PID."""
    log, signal_log = folder / "hostile.log", folder / "signals.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "HOSTILEPROJ_BROKER": broker.url,
        "HOSTILEPROJ_BACKEND": broker.backend or "",
        "HOSTILEPROJ_TRANSPORT_OPTIONS": json.dumps(broker.options),
        "HOSTILEPROJ_HMAC_KEY": secret.hex(),
        "SIGNAL_LOG": str(signal_log),
    }
    command = [
        sys.executable, "-m", "celeriac", "-A", "hostileproj", "worker",
        "-P", "prefork", "-c", "2", "-l", "info", "-n", "hostile@faults",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=folder
        )
    worker = HostileWorker(process, log, signal_log)
    try:
        if not wait_for(lambda: bool(worker.signals("worker_ready")), 30):
            raise AssertionError(f"worker did not become ready:\n{worker.log.read_text()}")
        yield worker
    finally:
        if worker.process.poll() is None:
            os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)


def signed_client(broker: FaultBroker, secret: bytes) -> Celeriac:
    """An app in the test process that signs with ``secret``, as the worker's clients do."""
    client = Celeriac("client", broker=broker.url, backend=broker.backend)
    client.conf.broker_transport_options = broker.options
    client.conf.update(
        task_serializer="hmac",
        accept_content=["hmac"],
        result_accept_content=["json"],
        security_hmac_key=secret,
    )
    client.setup_security()
    return client


def attempts(kind: str, secret: bytes) -> list[HostileMessage]:
    """The hostile inputs that can reach ``kind``, then the forgeries of a signed message."""
    hostile = [
        message
        for message in hostile_messages("hostileproj.add", f"faults-{kind}")
        if message.reaches_rabbitmq or kind != "rabbitmq"
    ]

    def good() -> Envelope:
        return signed_message("hmac", "hostileproj.add", (20, 22))

    own = SharedSecretSigner(secret)
    stranger = SignedSerializer(SharedSecretSigner(secrets.token_bytes(32)))
    two_hours_ago = SignedSerializer(own, now=lambda: time.time() - TWO_HOURS)
    forged = [
        ("tampered-header", with_header(good(), "task", "hostileproj.return_unserializable"),
         "headers were changed after signing"),
        ("tampered-body", with_body_bytes_replaced(good(), b"[20, 22]", b"[20, 99]"),
         "bad signature"),
        ("unknown-key", signed_by(stranger, "hostileproj.add", (20, 22)), "unknown"),
        ("replay", signed_by(two_hours_ago, "hostileproj.add", (20, 22)),
         "security_max_age=3600 s"),
    ]  # fmt: skip
    return hostile + [
        HostileMessage.from_envelope(name, envelope, "task_rejected", reason)
        for name, envelope, reason in forged
    ]


def fail_unstorable_then_run_a_good_task(client: Celeriac) -> None:
    """A return value and an exception that cannot be stored fail their task, clearly."""
    returned = client.send_task("hostileproj.return_unserializable")
    with pytest.raises(EncodeError, match="cannot encode"):
        returned.get(timeout=30)
    assert client.send_task("hostileproj.add", (1, 1)).get(timeout=30) == 2
    raised = client.send_task("hostileproj.raise_unserializable")
    with pytest.raises(ValueError, match="arguments of this ValueError could not be stored"):
        raised.get(timeout=30)
    assert client.send_task("hostileproj.add", (2, 2)).get(timeout=30) == 4


def secrets_shown(log: str, broker: FaultBroker, secret: bytes) -> list[str]:
    """Which credentials appear in ``log``: the shared secret in any form, the password."""
    shown = [form for form in (secret.hex(), repr(secret)[2:-1]) if form in log]
    password = urlsplit(broker.url).password
    if password and f":{password}@" in log:
        shown.append("the broker password")
    return shown


@pytest.mark.parametrize("kind", BROKERS)
def test_every_hostile_input_and_forgery_is_refused_and_a_good_task_runs_after_each(
    kind: str, tmp_path: Path
) -> None:
    secret = secrets.token_bytes(32)
    counts = {"refused": 0, "good": 0}
    outcome, pid = "FAILED", "not checked"
    try:
        with (
            fault_broker(kind, tmp_path) as broker,
            hostileproj_worker(broker, tmp_path, secret) as worker,
            closing(signed_client(broker, secret)) as client,
        ):
            tried = attempts(kind, secret)
            for count, attempt in enumerate(tried, start=1):
                refuse_then_run_a_good_task(client, attempt, count, worker.sent, "hostileproj.add")
                counts["refused"] += 1
                counts["good"] += 1
            fail_unstorable_then_run_a_good_task(client)
            counts["refused"] += 2
            counts["good"] += 2
            reasons = dead_letter_reasons(client, len(tried))
            log = worker.log.read_text(errors="replace")
            ready = [record["pid"] for record in worker.signals("worker_ready")]
            is_same_worker = worker.process.poll() is None and ready == [worker.process.pid]
            pid = "unchanged" if is_same_worker else "CHANGED"

            for attempt in tried:
                assert any(attempt.reason in reason for reason in reasons), attempt.name
                assert (attempt.logged or attempt.reason) in log, attempt.name
            assert is_same_worker, log[-3000:]
            assert secrets_shown(log, broker, secret) == []
        outcome = "ok"
    finally:
        figures = f"{counts['refused']} refused, {counts['good']} good tasks ran, worker pid {pid}"
        record_row(SCENARIO, kind, outcome, figures)

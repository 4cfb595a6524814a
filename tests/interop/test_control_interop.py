"""Remote control across frameworks on one RabbitMQ: Celery's pidbox shapes both ways.

Celery's ``inspect``/``control`` (its API and its real command line) reach a celeriac
worker, and celeriac's reach a Celery worker, through ``celery.pidbox`` and the direct
``reply.celery.pidbox`` exchange (wire protocol §6).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from celeriac import Celeriac
from tests.interop.conftest import InteropWorker, Servers

pytestmark = pytest.mark.slow


def test_celery_inspect_ping_and_stats_reach_a_celeriac_worker(
    celery_client: Any, celeriac_worker: InteropWorker
) -> None:
    node = celeriac_worker.hostname
    inspect = celery_client.control.inspect(destination=[node], timeout=5)

    pong = inspect.ping()
    stats = inspect.stats()
    registered = inspect.registered()

    assert pong == {node: {"ok": "pong"}}
    assert stats[node]["pool"]["max-concurrency"] == 2
    assert "interop.add" in registered[node]


def test_celery_command_line_pings_a_celeriac_worker(
    servers: Servers, celeriac_worker: InteropWorker
) -> None:
    node = celeriac_worker.hostname

    completed = subprocess.run(
        [sys.executable, "-m", "celery", "-b", servers.broker, "inspect", "ping", "-d", node, "-j"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {node: {"ok": "pong"}}


def test_celery_control_rate_limit_reaches_a_celeriac_worker(
    celery_client: Any, celeriac_worker: InteropWorker
) -> None:
    node = celeriac_worker.hostname

    replies = celery_client.control.rate_limit(
        "interop.add", "100/s", destination=[node], reply=True, timeout=5
    )

    assert replies == [{node: {"ok": "new rate limit set successfully"}}]


def test_celeriac_inspect_reaches_a_celery_worker(
    celeriac_client: Celeriac, celery_worker: InteropWorker
) -> None:
    node = celery_worker.hostname
    inspect = celeriac_client.control.inspect(destination=[node], timeout=5)

    pong = inspect.ping()
    stats = inspect.stats()
    registered = inspect.registered()

    assert pong == {node: {"ok": "pong"}}
    assert stats[node]["pool"]["max-concurrency"] == 1
    assert "interop.add" in registered[node]


def test_celeriac_revoke_reaches_a_celery_worker(
    celeriac_client: Celeriac, celery_worker: InteropWorker
) -> None:
    node = celery_worker.hostname

    replies = celeriac_client.control.revoke(
        "not-a-real-task-id", destination=[node], reply=True, timeout=5
    )
    revoked = celeriac_client.control.inspect(destination=[node], timeout=5).revoked()

    assert replies == [{node: {"ok": "tasks {'not-a-real-task-id'} flagged as revoked"}}]
    assert "not-a-real-task-id" in revoked[node]

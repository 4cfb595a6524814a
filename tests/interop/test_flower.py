"""Flower (from PyPI) watching a celeriac worker on RabbitMQ, checked through its HTTP API.

Flower learns of workers from their events and asks them ``stats``, ``registered``,
``active_queues`` and the rest over remote control (wire protocol §5.4); its worker page
answers 404 without a ``stats`` reply.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from tests.interop.conftest import InteropWorker, Servers, start_worker
from tests.servers import free_port, rabbitmq_vhost

pytestmark = pytest.mark.slow

READY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def watched(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Servers, InteropWorker, str]]:
    """A celeriac worker sending events in a virtual host of its own, and Flower's URL."""
    pytest.importorskip("flower", reason="Flower is in the interop dependency group")
    folder = tmp_path_factory.mktemp("flower")
    with rabbitmq_vhost("flower") as broker:
        own = Servers(broker, servers.backend)
        worker = start_worker("celeriac", own, folder, "-E")
        port = free_port()
        log = (folder / "flower.log").open("wb")
        command = [sys.executable, "-m", "celery", "--broker", broker, "flower"]
        flower = subprocess.Popen(
            [*command, f"--port={port}", "--address=127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, FLOWER_UNAUTHENTICATED_API="true"),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_serving(url, flower, folder / "flower.log")
            yield own, worker, url
        finally:
            flower.kill()
            flower.wait(timeout=10)
            log.close()
            worker.kill()


def wait_until_serving(url: str, flower: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if flower.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/healthcheck", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"Flower did not start:\n{log.read_text(errors='replace')}")


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def poll(read: Any, until: Any, timeout: float = 20.0) -> Any:
    """Call ``read`` until ``until(value)`` holds; return the last value."""
    deadline = time.monotonic() + timeout
    value = read()
    while not until(value) and time.monotonic() < deadline:
        time.sleep(0.3)
        value = read()
    return value


def test_flower_lists_the_worker_online_with_its_stats(
    watched: tuple[Servers, InteropWorker, str],
) -> None:
    _, worker, url = watched
    node = worker.hostname

    online = poll(lambda: get(f"{url}/api/workers?status=1"), lambda v: v.get(node) is True)
    workers = poll(lambda: get(f"{url}/api/workers?refresh=1"), lambda v: node in v)
    with urllib.request.urlopen(f"{url}/worker/{node}", timeout=10) as page:
        status = page.status

    assert online[node] is True
    info = workers[node]
    assert info["stats"]["pool"]["max-concurrency"] == 2
    assert "interop.add" in info["registered"]
    assert [queue["name"] for queue in info["active_queues"]] == [worker.queue]
    assert status == 200


def test_flower_shows_the_tasks_with_their_states_and_results(
    watched: tuple[Servers, InteropWorker, str],
) -> None:
    servers, worker, url = watched
    client = Celeriac("flower-client", broker=servers.broker, backend=servers.backend)
    succeeded = client.send_task("interop.add", (2, 3), queue=worker.queue)
    failed = client.send_task("interop.fail", ("boom",), queue=worker.queue)
    assert succeeded.get(timeout=15) == 5
    with pytest.raises(ValueError, match="boom"):
        failed.get(timeout=15)
    client.close()

    tasks = poll(
        lambda: get(f"{url}/api/tasks"),
        lambda v: (
            v.get(succeeded.id, {}).get("state") == "SUCCESS"
            and v.get(failed.id, {}).get("state") == "FAILURE"
        ),
    )

    assert tasks[succeeded.id]["name"] == "interop.add"
    assert tasks[succeeded.id]["result"] == "5"
    assert tasks[succeeded.id]["worker"] == worker.hostname
    assert "boom" in tasks[failed.id]["exception"]
    with pytest.raises(urllib.error.HTTPError):
        get(f"{url}/api/task/info/no-such-task")

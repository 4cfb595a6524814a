"""``rpc://`` between Celery and celeriac on RabbitMQ: each side's worker sends results to
the other side's client, through Celery's reply queue and message layout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac
from tests.interop.conftest import InteropWorker, Servers, module_worker
from tests.servers import require


@pytest.fixture(scope="module")
def rpc_servers() -> Servers:
    return Servers(require("rabbitmq"), "rpc://")


@pytest.fixture(scope="module")
def celery_rpc_worker(
    rpc_servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InteropWorker]:
    with module_worker("celery", rpc_servers, tmp_path_factory) as worker:
        yield worker


@pytest.fixture(scope="module")
def celeriac_rpc_worker(
    rpc_servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InteropWorker]:
    with module_worker("celeriac", rpc_servers, tmp_path_factory) as worker:
        yield worker


def test_a_celery_worker_answers_a_celeriac_client(
    rpc_servers: Servers, celery_rpc_worker: InteropWorker
) -> None:
    client = Celeriac("celeriac-rpc-client", broker=rpc_servers.broker, backend="rpc://")
    try:
        queue = celery_rpc_worker.queue
        added = client.send_task("interop.add", (2, 3), queue=queue)
        failed = client.send_task("interop.fail", ("from celery",), queue=queue)

        assert added.get(timeout=20) == 5
        with pytest.raises(ValueError, match="from celery"):
            failed.get(timeout=20)
    finally:
        client.close()


def test_a_celeriac_worker_answers_a_celery_client(
    rpc_servers: Servers, celeriac_rpc_worker: InteropWorker
) -> None:
    from celery import Celery

    client: Any = Celery("celery-rpc-client", broker=rpc_servers.broker, backend="rpc://")
    try:
        queue = celeriac_rpc_worker.queue
        added = client.send_task("interop.add", (2, 3), queue=queue)
        failed = client.send_task("interop.fail", ("from celeriac",), queue=queue)

        assert added.get(timeout=20) == 5
        with pytest.raises(Exception, match="from celeriac") as raised:
            failed.get(timeout=20)
        assert type(raised.value).__name__ == "ValueError"
    finally:
        client.close()

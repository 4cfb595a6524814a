"""Storing a result while the result store is away: retried until it is back, then stored."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.backends.base import BackendError, BackendUnavailable
from celeriac.protocol.result_meta import build_meta
from celeriac.retries import retry_while_unavailable
from celeriac.states import SUCCESS
from tests.servers import private_redis


def test_only_unavailable_errors_are_retried_with_growing_capped_pauses() -> None:
    pauses: list[float] = []
    failures = iter([BackendUnavailable("down")] * 5)

    def store() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "stored"

    outcome = retry_while_unavailable(
        store, max_retries=10, base_sleep_ms=100, max_sleep_ms=400, sleep=pauses.append
    )

    assert outcome == "stored"
    assert len(pauses) == 5
    assert all(0 <= pause <= 0.4 for pause in pauses)


def test_retries_stop_at_max_retries_and_other_errors_are_not_retried() -> None:
    pauses: list[float] = []

    def unavailable() -> None:
        raise BackendUnavailable("still down")

    def refused() -> None:
        raise BackendError("WRONGTYPE")

    with pytest.raises(BackendUnavailable):
        retry_while_unavailable(
            unavailable, max_retries=3, base_sleep_ms=1, max_sleep_ms=1, sleep=pauses.append
        )
    with pytest.raises(BackendError, match="WRONGTYPE"):
        retry_while_unavailable(
            refused, max_retries=3, base_sleep_ms=1, max_sleep_ms=1, sleep=pauses.append
        )
    assert len(pauses) == 3


@pytest.mark.timeout(30)
def test_store_meta_waits_for_a_redis_store_that_comes_back(tmp_path: Path) -> None:
    with private_redis(tmp_path, started=False) as server:
        app = Celeriac("retrying", broker="memory://retrying", backend=server.url)
        app.conf.result_backend_max_sleep_between_retries_ms = 200
        stored = threading.Event()

        def store() -> None:
            app.store_meta(build_meta("a-task", SUCCESS, 42))
            stored.set()

        storing = threading.Thread(target=store)
        storing.start()
        time.sleep(0.5)
        waited_for_server = not stored.is_set()
        server.start()
        storing.join(timeout=10)
        meta = app.backend.get("a-task")
        app.close()

    assert waited_for_server
    assert stored.is_set()
    assert meta is not None
    assert meta["status"] == SUCCESS
    assert meta["result"] == 42

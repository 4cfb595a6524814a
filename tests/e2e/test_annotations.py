"""``task_annotations`` in a real worker: an annotation object named by its import path
gives every task an ``on_failure`` handler, and a ``"*"`` entry a rate limit."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from celeriac import Celeriac
from tests.e2e.conftest import WorkerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("broker", ["sqlite"], indirect=True)]
StartWorker = Callable[..., WorkerProcess]


def test_the_worker_applies_annotation_objects_and_star_entries(
    start_worker: StartWorker, client: Celeriac, monkeypatch: pytest.MonkeyPatch
) -> None:
    annotations = ["sigproj:AuditFailures", {"*": {"rate_limit": "4/s"}}]
    monkeypatch.setenv("SIGPROJ_TASK_ANNOTATIONS", json.dumps(annotations))
    worker = start_worker(pool="prefork", concurrency=4)

    began = time.monotonic()
    adds = [client.send_task("sigproj.add", (n, n)) for n in range(5)]
    failing = client.send_task("sigproj.boom", ("annotated",))

    assert [result.get(timeout=10) for result in adds] == [0, 2, 4, 6, 8]
    assert time.monotonic() - began >= 0.9
    assert wait_for(
        lambda: any(
            record["signal"] == "annotation:on_failure" and record["task_id"] == failing.id
            for record in worker.signals()
        )
    )

"""Dead letters through ``celeriac deadletters`` and ``celeriac.deadletters``, on every broker."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.deadletters import dead_letters
from tests.e2e.conftest import Broker, WorkerProcess, subprocess_env

pytestmark = pytest.mark.slow


def deadletters_command(broker: Broker, folder: Path, *arguments: str) -> str:
    """Run ``celeriac -A sigproj deadletters ...`` and return what it printed."""
    completed = subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "sigproj", "deadletters", *arguments],
        env=subprocess_env(broker, folder / "signals.jsonl"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def park(client: Celeriac, *args: int) -> str:
    """Send ``sigproj.add`` and move its message to the dead-letter queue; return its id."""
    result = client.send_task("sigproj.add", args)
    [delivery] = client.transport.fetch(["celery"], 1, 5.0)
    client.transport.dead_letter([delivery.tag], "parked by the test")
    return str(result.id)


def test_list_show_replay_and_purge_dead_letters(
    client: Celeriac,
    broker: Broker,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    first = park(client, 2, 3)
    second = park(client, 5, 5)
    client.transport.stop_consuming(["celery"])

    listed = deadletters_command(broker, tmp_path, "list")
    shown = json.loads(deadletters_command(broker, tmp_path, "show", first))
    in_python = {letter.id: letter for letter in dead_letters(client)}
    replayed = deadletters_command(broker, tmp_path, "replay", first)
    start_worker()
    value = client.AsyncResult(first).get(timeout=15)
    purged = deadletters_command(broker, tmp_path, "purge", "-f")
    left = dead_letters(client)

    assert first in listed
    assert second in listed
    assert "sigproj.add" in listed
    assert "parked by the test" in listed
    assert "2 dead letters." in listed
    assert shown["reason"] == "parked by the test"
    assert shown["queue"] == "celery"
    assert shown["deliveries"] == 1
    assert shown["body"].startswith("[[2, 3]")
    assert set(in_python) == {first, second}
    assert in_python[first].dead_lettered_at is not None
    assert f"{first} -> celery" in replayed
    assert value == 5
    assert "Purged 1 dead letter." in purged
    assert left == []

"""The app of the tests that run real ``celeriac beat`` and ``worker -B`` processes.

It adds its periodic task the way Celery's documentation shows, from an
``on_after_configure`` handler. Environment: BEATPROJ_BROKER, BEATPROJ_BACKEND and
BEATPROJ_TRANSPORT_OPTIONS (JSON) say where to meet; BEATPROJ_INTERVAL is the period in
seconds; BEATPROJ_LOG is a file that gets a JSON line per beat signal and per task run.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celeriac import Celeriac, signals

app = Celeriac(
    "beatproj",
    broker=os.environ["BEATPROJ_BROKER"],
    backend=os.environ.get("BEATPROJ_BACKEND") or None,
)
app.conf.broker_transport_options = json.loads(os.environ.get("BEATPROJ_TRANSPORT_OPTIONS") or "{}")
# A standby takes over within about two seconds of the leader's death.
app.conf.beat_lease_seconds = 1.5


def record(event: str, **fields: Any) -> None:
    with open(os.environ["BEATPROJ_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


@app.task
def tick(number: int) -> int:
    record("tick", number=number)
    return number


@app.on_after_configure.connect
def add_the_periodic_task(sender: Celeriac, **kwargs: Any) -> None:
    sender.add_periodic_task(float(os.environ["BEATPROJ_INTERVAL"]), tick.s(7), name="tick")


@signals.beat_init.connect
def beat_started(sender: Any = None, **kwargs: Any) -> None:
    record("beat_init", sender=type(sender).__name__)


@signals.beat_embedded_init.connect
def embedded_beat_started(sender: Any = None, **kwargs: Any) -> None:
    record("beat_embedded_init", sender=type(sender).__name__)

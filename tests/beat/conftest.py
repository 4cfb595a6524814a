"""Fixtures of the beat tests: a clock to move by hand, and the stores and brokers beats
share (an SQLite file, the loopback Redis under a key prefix of the test's own, and
RabbitMQ in a virtual host of its own with PostgreSQL results in a schema of its own)."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from celeriac.beat.postgres_store import PostgresStore
from celeriac.beat.redis_store import RedisStore
from celeriac.beat.sqlite_store import SQLiteStore
from celeriac.beat.store import ScheduleStore
from tests.servers import delete_redis_keys, rabbitmq_vhost, require


class Clock:
    """A clock the test moves: ``now()`` for schedules (aware UTC) and ``time()`` (seconds)."""

    def __init__(self, start: datetime.datetime) -> None:
        self.moment = start

    def now(self) -> datetime.datetime:
        return self.moment

    def time(self) -> float:
        return self.moment.timestamp()

    def advance(self, seconds: float) -> datetime.datetime:
        self.moment += datetime.timedelta(seconds=seconds)
        return self.moment

    def set(self, moment: datetime.datetime) -> datetime.datetime:
        self.moment = moment
        return moment


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.datetime(2024, 5, 6, 10, 0, tzinfo=datetime.UTC))


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


@contextmanager
def postgres_schema() -> Iterator[str]:
    """The PostgreSQL URL of a schema of the test's own, dropped afterwards."""
    server_url = require("postgres")
    schema = f"celeriac_beat_{uuid.uuid4().hex}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_query(server_url, f"options=-csearch_path%3D{schema}")
    finally:
        with psycopg.connect(server_url, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


NewStore = Callable[[], ScheduleStore]


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NewStore]:
    """Open stores on one shared place, as beats in several processes would."""
    opened: list[ScheduleStore] = []
    with ExitStack() as cleanup:
        make: NewStore
        if request.param == "sqlite":
            make = partial(SQLiteStore, tmp_path / "beat.db")
        elif request.param == "redis":
            url = require("redis")
            prefix = f"test-beat-{uuid.uuid4().hex}:"
            cleanup.callback(delete_redis_keys, url, prefix)
            make = partial(RedisStore, url, {}, prefix=prefix)
        else:
            schema_url = cleanup.enter_context(postgres_schema())
            make = partial(PostgresStore, schema_url)
        cleanup.callback(_close_all, opened)

        def open_() -> ScheduleStore:
            opened.append(make())
            return opened[-1]

        yield open_


def _close_all(stores: list[ScheduleStore]) -> None:
    for store in stores:
        store.close()


@dataclass(frozen=True)
class BeatBroker:
    """Where the beats and workers of one test meet, and what ``beatproj`` reads."""

    name: str
    url: str
    backend: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            "BEATPROJ_BROKER": self.url,
            "BEATPROJ_BACKEND": self.backend or "",
            "BEATPROJ_TRANSPORT_OPTIONS": json.dumps(self.options),
        }


@contextmanager
def beat_broker(kind: str, folder: Path) -> Iterator[BeatBroker]:
    """A broker of ``kind``: ``sqlite``, ``redis`` or ``rabbitmq`` (PostgreSQL results)."""
    if kind == "sqlite":
        yield BeatBroker(kind, f"sqlite:///{folder}/broker.db")
    elif kind == "redis":
        url = require("redis")
        prefix = f"test-beat-{uuid.uuid4().hex}:"
        try:
            yield BeatBroker(kind, url, options={"global_keyprefix": prefix})
        finally:
            delete_redis_keys(url, prefix)
    else:
        with postgres_schema() as backend, rabbitmq_vhost("beat") as url:
            yield BeatBroker(kind, url, backend)

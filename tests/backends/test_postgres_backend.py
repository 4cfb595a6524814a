"""The PostgreSQL result backend against a real server: Celery's table, NOTIFY, cleanup."""

from __future__ import annotations

import datetime
import json
import pickle
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from celeriac.backends import from_url
from celeriac.backends.base import BackendError
from celeriac.backends.postgres import PostgresBackend
from celeriac.exceptions import ContentDisallowed, ImproperlyConfigured
from celeriac.protocol.result_meta import build_meta
from tests.backends.support import OLD_CHORD_TABLE, success_meta, two_part_chord, wait_while_cut
from tests.servers import require

# Celery 5.7's columns of celery_taskmeta (wire protocol §7.4), as information_schema names them.
CELERY_COLUMNS = {
    "id": "integer",
    "task_id": "character varying(155)",
    "status": "character varying(50)",
    "result": "bytea",
    "date_done": "timestamp without time zone",
    "traceback": "text",
    "children": "bytea",
    "name": "character varying(155)",
    "args": "bytea",
    "kwargs": "bytea",
    "worker": "character varying(155)",
    "retries": "integer",
    "queue": "character varying(155)",
    "stamps": "bytea",
}

# The table Celery 5.6 creates with result_extended off: result is a PickleType.
CELERY_56_TABLE = """
CREATE SEQUENCE {schema}.task_id_sequence;
CREATE TABLE {schema}.celery_taskmeta (
    id INTEGER NOT NULL, task_id VARCHAR(155), status VARCHAR(50), result BYTEA,
    date_done TIMESTAMP WITHOUT TIME ZONE, traceback TEXT,
    PRIMARY KEY (id), UNIQUE (task_id)
)
"""

Connection = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def server_url() -> str:
    return require("postgres")


@pytest.fixture
def connection(server_url: str) -> Iterator[Connection]:
    with psycopg.connect(server_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def schema(connection: Connection) -> Iterator[str]:
    schema = f"celeriac_test_{uuid.uuid4().hex}"
    connection.execute(f"CREATE SCHEMA {schema}")
    yield schema
    connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def backend(server_url: str, schema: str) -> Iterator[PostgresBackend]:
    backend = PostgresBackend(server_url, database_table_schemas={"task": schema})
    yield backend
    backend.close()


def columns_of(connection: Connection, schema: str, table: str) -> dict[str, str]:
    rows = connection.execute(
        "SELECT column_name, format_type(atttypid, atttypmod)"
        " FROM information_schema.columns JOIN pg_attribute"
        " ON attrelid = format('%%I.%%I', table_schema, table_name)::regclass"
        " AND attname = column_name"
        " WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    )
    return {str(name): str(kind) for name, kind in rows}


def test_table_has_celerys_layout(
    backend: PostgresBackend, connection: Connection, schema: str
) -> None:
    backend.store("task-1", success_meta("task-1"))

    columns = columns_of(connection, schema, "celery_taskmeta")
    assert {name: columns[name] for name in CELERY_COLUMNS} == CELERY_COLUMNS
    assert set(columns) - set(CELERY_COLUMNS) == {"celeriac_meta", "celeriac_expires_at"}
    sequence = connection.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.task_id_sequence",)
    ).fetchone()
    assert sequence == (True,)


def test_row_is_written_as_celery_writes_it(
    backend: PostgresBackend, connection: Connection, schema: str
) -> None:
    meta = build_meta(
        "task-1",
        "FAILURE",
        ValueError("bad thing"),
        traceback="Traceback ...\nValueError: bad thing\n",
        date_done="2026-11-21T19:02:11.210660+00:00",
        extended={"name": "tasks.boom", "args": ["bad thing"], "kwargs": {}, "worker": "w1@vm"},
    )

    backend.store("task-1", meta)

    row = connection.execute(
        "SELECT status, result, date_done, traceback, name, args, kwargs, worker, retries"
        f" FROM {schema}.celery_taskmeta WHERE task_id = 'task-1'"
    ).fetchone()
    assert row is not None
    status, result, date_done, traceback, name, args, kwargs, worker, retries = row
    assert status == "FAILURE"
    assert json.loads(bytes(result)) == {
        "exc_type": "ValueError",
        "exc_message": ["bad thing"],
        "exc_module": "builtins",
    }
    assert date_done == datetime.datetime(2026, 11, 21, 19, 2, 11, 210660)
    assert traceback == "Traceback ...\nValueError: bad thing\n"
    assert (name, worker, retries) == ("tasks.boom", "w1@vm", None)
    assert json.loads(bytes(args)) == ["bad thing"]
    assert json.loads(bytes(kwargs)) == {}


def insert_celery_row(connection: Connection, schema: str, result: bytes) -> None:
    connection.execute(
        f"INSERT INTO {schema}.celery_taskmeta"
        " (id, task_id, status, result, date_done, traceback, name, args, kwargs, worker,"
        " retries, queue)"
        f" VALUES (nextval('{schema}.task_id_sequence'), 'celery-1', 'FAILURE', %s,"
        " '2026-11-21 19:02:11.21066', 'TB', 'tasks.boom', %s, %s, 'w1@vm', 0, 'celery')",
        (result, b'["bad"]', b"{}"),
    )


CELERY_FAILURE_META = {
    "status": "FAILURE",
    "result": {"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"},
    "traceback": "TB",
    "children": [],
    "date_done": "2026-11-21T19:02:11.210660+00:00",
    "name": "tasks.boom",
    "args": ["bad"],
    "kwargs": {},
    "worker": "w1@vm",
    "retries": 0,
    "queue": "celery",
    "task_id": "celery-1",
}


def test_row_celery_57_wrote_is_read(
    backend: PostgresBackend, connection: Connection, schema: str
) -> None:
    backend.store("setup", success_meta("setup"))
    result = json.dumps(CELERY_FAILURE_META["result"]).encode()

    insert_celery_row(connection, schema, result)

    assert backend.get("celery-1") == CELERY_FAILURE_META


def test_pickled_row_celery_56_wrote_is_read_only_when_pickle_is_accepted(
    server_url: str, connection: Connection, schema: str
) -> None:
    connection.execute(CELERY_56_TABLE.format(schema=schema))
    tables = {"task": schema}
    json_only = from_url(server_url, database_table_schemas=tables)
    with_pickle = from_url(server_url, accept=["json", "pickle"], database_table_schemas=tables)
    json_only.store("setup", success_meta("setup"))

    insert_celery_row(connection, schema, pickle.dumps(CELERY_FAILURE_META["result"]))

    try:
        assert with_pickle.get("celery-1") == CELERY_FAILURE_META
        with pytest.raises(ContentDisallowed, match="accept_content"):
            json_only.get("celery-1")
    finally:
        json_only.close()
        with_pickle.close()


def test_row_a_celery_worker_updated_is_read_from_its_columns(
    backend: PostgresBackend, connection: Connection, schema: str
) -> None:
    started = build_meta("task-1", "STARTED", {"pid": 1}, group_id="group-1")
    backend.store("task-1", started)

    connection.execute(
        f"UPDATE {schema}.celery_taskmeta SET status = 'SUCCESS', result = '7',"
        " date_done = '2026-11-21 19:05:00' WHERE task_id = 'task-1'"
    )

    assert backend.get("task-1") == {
        "status": "SUCCESS",
        "result": 7,
        "traceback": None,
        "children": [],
        "date_done": "2026-11-21T19:05:00+00:00",
        "task_id": "task-1",
    }


def test_custom_table_name_and_an_old_celery_table_gain_our_columns(
    server_url: str, connection: Connection, schema: str
) -> None:
    connection.execute(CELERY_56_TABLE.format(schema=schema).replace("celery_taskmeta", "results"))
    backend = PostgresBackend(
        server_url,
        database_table_names={"task": "results"},
        database_table_schemas={"task": schema},
    )
    try:
        backend.store("task-1", success_meta("task-1"))
        assert backend.get("task-1") == success_meta("task-1")
    finally:
        backend.close()

    assert set(columns_of(connection, schema, "results")) >= set(CELERY_COLUMNS)


def test_missing_table_is_an_error_when_tables_are_not_created(
    server_url: str, schema: str
) -> None:
    backend = PostgresBackend(
        server_url,
        database_table_schemas={"task": schema},
        database_create_tables_at_setup=False,
    )

    with pytest.raises(ImproperlyConfigured, match="does not exist"):
        backend.get("task-1")


def test_concurrent_writers_never_overwrite_the_first_success(
    server_url: str, schema: str, backend: PostgresBackend, connection: Connection
) -> None:
    task_ids = [f"shared-{index}" for index in range(5)]
    backend.store("setup", success_meta("setup"))
    writers = [
        PostgresBackend(server_url, database_table_schemas={"task": schema}) for _ in range(4)
    ]
    connection.execute(f'LISTEN "{backend._channel}"')

    def write(writer: PostgresBackend, name: str) -> None:
        for round_ in range(15):
            for task_id in task_ids:
                writer.store(task_id, build_meta(task_id, "STARTED", name))
                writer.store(task_id, success_meta(task_id, f"{name}-{round_}"))

    threads = [
        threading.Thread(target=write, args=(writer, f"writer-{index}"))
        for index, writer in enumerate(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for writer in writers:
        writer.close()
    notified = [notify.payload for notify in connection.notifies(timeout=0.5)]

    assert sorted(notified) == task_ids
    assert {backend.get(task_id)["status"] for task_id in task_ids} == {"SUCCESS"}  # type: ignore[index]


def test_wait_listens_again_when_its_connection_is_terminated(
    server_url: str, schema: str, connection: Connection
) -> None:
    name = f"waiter-{uuid.uuid4().hex[:12]}"
    tables = {"task": schema}
    waiter = from_url(f"{server_url}?application_name={name}", database_table_schemas=tables)
    writer = from_url(server_url, database_table_schemas=tables)
    writer.store("setup", success_meta("setup"))
    assert waiter.get("setup") == success_meta("setup")

    def terminate_listener() -> bool:
        return bool(
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND state = 'idle'",
                (name,),
            ).fetchall()
        )

    meta, waited = wait_while_cut(waiter, writer, terminate_listener)

    assert meta == success_meta("task-1")
    assert waited < 2.0


def test_expiry_time_is_set_from_result_expires(
    server_url: str, schema: str, connection: Connection
) -> None:
    for expires, task_id in [(3600.0, "hour"), (None, "never")]:
        backend = PostgresBackend(
            server_url, database_table_schemas={"task": schema}, expires=expires
        )
        backend.store(task_id, success_meta(task_id))
        backend.close()

    rows: dict[str, Any] = dict(
        connection.execute(
            "SELECT task_id, extract(epoch FROM celeriac_expires_at - clock_timestamp())"
            f" FROM {schema}.celery_taskmeta"
        ).fetchall()
    )
    assert 3590 < float(rows["hour"]) <= 3600
    assert rows["never"] is None


def test_cleanup_counts_expired_rows_and_rows_celery_wrote_long_ago(
    server_url: str, schema: str, connection: Connection
) -> None:
    tables = {"task": schema}
    short = PostgresBackend(server_url, expires=0.2, database_table_schemas=tables)
    forever = PostgresBackend(server_url, expires=None, database_table_schemas=tables)
    short.store("short-1", success_meta("short-1"))
    short.store("short-2", success_meta("short-2"))
    forever.store("kept", success_meta("kept"))
    insert_celery_row(connection, schema, b"null")
    time.sleep(0.3)

    try:
        assert forever.cleanup() == 2
        assert short.cleanup() == 1
        assert short.cleanup() == 0
        assert forever.get("kept") == success_meta("kept")
    finally:
        short.close()
        forever.close()


def test_unreachable_server_raises_backend_error_without_the_password() -> None:
    backend = from_url("db+postgresql://user:s3cret@127.0.0.1:1/test", connect_timeout=2)

    with pytest.raises(BackendError, match=r"postgresql://user:\*\*\*\*@127\.0\.0\.1:1") as raised:
        backend.get("task-1")

    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    "scheme", ["postgres", "db+postgresql", "db+postgresql+psycopg", "db+postgresql+psycopg2"]
)
def test_sqlalchemy_style_schemes_are_accepted(server_url: str, schema: str, scheme: str) -> None:
    url = server_url.replace("postgresql://", f"{scheme}://", 1)
    backend = from_url(url, database_table_schemas={"task": schema})
    try:
        backend.store("task-1", success_meta("task-1"))
        assert backend.get("task-1") == success_meta("task-1")
    finally:
        backend.close()


GROUP_TUPLE = [["g-1", None], [[["t-1", None], None], [["t-2", None], None]]]


def test_group_row_is_written_as_celery_57_writes_it(
    server_url: str, connection: Connection, schema: str
) -> None:
    backend = PostgresBackend(server_url, database_table_schemas={"group": schema})
    try:
        backend.save_group("g-1", GROUP_TUPLE)
    finally:
        backend.close()

    assert columns_of(connection, schema, "celery_tasksetmeta") == {
        "id": "integer",
        "taskset_id": "character varying(155)",
        "result": "bytea",
        "date_done": "timestamp without time zone",
    }
    row = connection.execute(
        f"SELECT id = (SELECT last_value FROM {schema}.taskset_id_sequence), taskset_id, result,"
        " abs(extract(epoch FROM (now() AT TIME ZONE 'UTC') - date_done)) < 5"
        f" FROM {schema}.celery_tasksetmeta"
    ).fetchone()
    assert row == (
        True,
        "g-1",
        b'[["g-1", null], [[["t-1", null], null], [["t-2", null], null]]]',
        True,
    )


def test_group_row_celery_56_pickled_is_restored_when_pickle_is_accepted(
    server_url: str, connection: Connection, schema: str
) -> None:
    backend = PostgresBackend(
        server_url, accept=["json", "pickle"], database_table_schemas={"group": schema}
    )
    try:
        assert backend.restore_group("g-1") is None
        connection.execute(
            f"INSERT INTO {schema}.celery_tasksetmeta (taskset_id, result, date_done)"
            " VALUES ('g-1', %s, now() AT TIME ZONE 'UTC')",
            (pickle.dumps(GROUP_TUPLE),),
        )

        assert backend.restore_group("g-1") == GROUP_TUPLE
    finally:
        backend.close()


def test_chord_tables_are_our_own_beside_the_group_table(
    server_url: str, connection: Connection, schema: str
) -> None:
    backend = PostgresBackend(server_url, database_table_schemas={"group": schema})
    try:
        backend.set_chord_size("g-1", 2)
        backend.chord_part_done("g-1", "t-0", 0, "SUCCESS", 5)
    finally:
        backend.close()

    chord = connection.execute(f"SELECT group_id, size FROM {schema}.celeriac_chord").fetchall()
    parts = connection.execute(
        f"SELECT group_id, task_id, group_index, state, result FROM {schema}.celeriac_chord_part"
    ).fetchall()
    assert chord == [("g-1", 2)]
    assert parts == [("g-1", "t-0", 0, "SUCCESS", b"5")]


def test_a_chord_table_made_before_the_ready_column_gains_it(
    server_url: str, connection: Connection, schema: str
) -> None:
    """Chord tables an earlier celeriac created get the parts counter when first opened."""
    connection.execute(OLD_CHORD_TABLE.format(table=f"{schema}.celeriac_chord"))
    backend = PostgresBackend(server_url, database_table_schemas={"group": schema})
    try:
        progress = two_part_chord(backend)
    finally:
        backend.close()

    assert progress.must_fire
    assert progress.results == [5, 6]
    assert columns_of(connection, schema, "celeriac_chord")["ready"] == "integer"

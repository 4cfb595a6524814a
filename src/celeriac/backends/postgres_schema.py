"""The tables of the PostgreSQL result backend (edge layer): their names, columns and DDL.

Celery's database backend defines the layout (wire protocol §7.4): ``celery_taskmeta``
with ``id`` from the sequence ``task_id_sequence``, ``task_id varchar(155) UNIQUE``,
``status varchar(50)``, ``result bytea``, ``date_done timestamp`` (naive UTC), ``traceback
text``, ``children bytea`` and the extended columns ``name``, ``args``, ``kwargs``,
``worker``, ``retries``, ``queue`` and ``stamps``; and ``celery_tasksetmeta`` with ``id``
from ``taskset_id_sequence``, ``taskset_id``, ``result`` and ``date_done``. The chord
counter's tables (``chord_table``) go in the group table's schema.

Two columns are our own, which Celery's ORM ignores: ``celeriac_meta`` and
``celeriac_expires_at`` (``postgres_rows`` says what they hold). Setup adds them to an
existing Celery table when missing. It runs under an advisory lock on the table's name so
that processes starting together do not race on the DDL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from celeriac.backends.chord_table import CHORD_TABLE, PART_TABLE, ChordTables
from celeriac.backends.postgres_pool import Connection, Row
from celeriac.exceptions import ImproperlyConfigured

TASK_TABLE = "celery_taskmeta"
TASK_SEQUENCE = "task_id_sequence"
GROUP_TABLE = "celery_tasksetmeta"
GROUP_SEQUENCE = "taskset_id_sequence"

# The columns besides id, task_id and status that this backend writes, with their types.
COLUMNS = {
    "result": "bytea",
    "date_done": "timestamp",
    "traceback": "text",
    "children": "bytea",
    "name": "varchar(155)",
    "args": "bytea",
    "kwargs": "bytea",
    "worker": "varchar(155)",
    "retries": "integer",
    "queue": "varchar(155)",
    "stamps": "bytea",
    "celeriac_meta": "bytea",
    "celeriac_expires_at": "timestamptz",
}


@dataclass(frozen=True, slots=True)
class Tables:
    """The schema-qualified names of the backend's tables and sequences."""

    task: sql.Identifier
    task_sequence: sql.Identifier
    group: sql.Identifier
    group_sequence: sql.Identifier
    chords: ChordTables

    @classmethod
    def from_settings(
        cls, names: Mapping[str, str] | None, schemas: Mapping[str, str] | None
    ) -> Tables:
        """Name the tables as Celery's ``database_table_names`` and ``..._schemas`` say."""
        task_schema = (schemas or {}).get("task")
        task_table = (names or {}).get("task") or TASK_TABLE
        group_schema = (schemas or {}).get("group")
        group_table = (names or {}).get("group") or GROUP_TABLE
        return cls(
            task=sql.Identifier(*filter(None, (task_schema, task_table))),
            task_sequence=sql.Identifier(*filter(None, (task_schema, TASK_SEQUENCE))),
            group=sql.Identifier(*filter(None, (group_schema, group_table))),
            group_sequence=sql.Identifier(*filter(None, (group_schema, GROUP_SEQUENCE))),
            chords=ChordTables(
                sql.Identifier(*filter(None, (group_schema, CHORD_TABLE))).as_string(),
                sql.Identifier(*filter(None, (group_schema, PART_TABLE))).as_string(),
                placeholder="%s",
                blob="bytea",
                dialect="postgresql",
            ),
        )


def set_up(connection: Connection, tables: Tables, *, create_tables: bool) -> int:
    """Create the tables (or add our columns to Celery's) if asked; return the task table's oid.

    Raises:
        ImproperlyConfigured: the task table does not exist and may not be created.
    """
    qualified = tables.task.as_string()
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (qualified,))
        if create_tables:
            _create_task_table(connection, tables)
            _create_group_tables(connection, tables)
        found = connection.execute("SELECT to_regclass(%s)::oid", (qualified,)).fetchone()
        if found is None or found[0] is None:
            raise ImproperlyConfigured(
                f"result table {qualified} does not exist and "
                "database_create_tables_at_setup is off"
            )
    oid: int = found[0]
    return oid


def _create_task_table(connection: Connection, tables: Tables) -> None:
    """Create Celery's task table, or add the columns an existing one lacks."""
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
        for name, kind in COLUMNS.items()
    )
    _create_celery_table(
        connection,
        tables.task,
        tables.task_sequence,
        sql.SQL("task_id varchar(155) UNIQUE, status varchar(50), {columns}").format(
            columns=columns
        ),
    )
    present = {
        name
        for (name,) in connection.execute(
            "SELECT attname FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (tables.task.as_string(),),
        )
    }
    missing = [name for name in COLUMNS if name not in present]
    if missing:
        connection.execute(
            sql.SQL("ALTER TABLE {table} {additions}").format(
                table=tables.task,
                additions=sql.SQL(", ").join(
                    sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(
                        sql.Identifier(name), sql.SQL(COLUMNS[name])
                    )
                    for name in missing
                ),
            )
        )


def _create_group_tables(connection: Connection, tables: Tables) -> None:
    """Create Celery's group table and the chord counter's tables."""
    _create_celery_table(
        connection,
        tables.group,
        tables.group_sequence,
        sql.SQL("taskset_id varchar(155) UNIQUE, result bytea, date_done timestamp"),
    )

    def execute(query: str, parameters: Sequence[Any]) -> list[Row]:
        connection.execute(query, parameters)
        return []

    tables.chords.create(execute)


def _create_celery_table(
    connection: Connection,
    table: sql.Identifier,
    sequence: sql.Identifier,
    columns: sql.Composable,
) -> None:
    """Create a table as Celery's SQLAlchemy models do: an ``id`` the sequence numbers."""
    connection.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {0}").format(sequence))
    connection.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {table} ("
            " id integer NOT NULL DEFAULT nextval({sequence}) PRIMARY KEY, {columns})"
        ).format(table=table, sequence=sql.Literal(sequence.as_string()), columns=columns)
    )

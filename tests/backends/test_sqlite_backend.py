"""The SQLite result backend's own tables: Celery's group table layout, our chord tables."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.backends.sqlite import SQLiteBackend
from tests.backends.support import OLD_CHORD_TABLE, two_part_chord

GROUP_TUPLE = [["g-1", None], [[["t-1", None], None], [["t-2", None], None]]]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "results.db"


@pytest.fixture
def backend(database: Path) -> Iterator[SQLiteBackend]:
    backend = SQLiteBackend(f"sqlite:///{database}")
    yield backend
    backend.close()


def test_group_row_is_written_as_celery_57_writes_it(
    backend: SQLiteBackend, database: Path
) -> None:
    backend.save_group("g-1", GROUP_TUPLE)

    with sqlite3.connect(database) as connection:
        schema = connection.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'celery_tasksetmeta'"
        ).fetchone()
        row = connection.execute("SELECT * FROM celery_tasksetmeta").fetchone()
    connection.close()
    assert " ".join(schema[0].split()) == (
        "CREATE TABLE celery_tasksetmeta ( id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,"
        " taskset_id VARCHAR(155) UNIQUE, result BLOB, date_done DATETIME )"
    )
    row_id, group_id, result, date_done = row
    assert (row_id, group_id) == (1, "g-1")
    assert result == b'[["g-1", null], [[["t-1", null], null], [["t-2", null], null]]]'
    written_at = datetime.datetime.strptime(date_done, "%Y-%m-%d %H:%M:%S.%f")
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    assert abs(now - written_at) < datetime.timedelta(seconds=5)


def test_chord_tables_hold_one_row_per_chord_and_per_part(
    backend: SQLiteBackend, database: Path
) -> None:
    backend.set_chord_size("g-1", 2)
    backend.chord_part_done("g-1", "t-0", 0, "SUCCESS", 5)
    backend.chord_part_done("g-1", "t-0", 0, "SUCCESS", 5)

    with sqlite3.connect(database) as connection:
        chords = connection.execute("SELECT group_id, size FROM celeriac_chord").fetchall()
        parts = connection.execute(
            "SELECT group_id, task_id, group_index, state, result FROM celeriac_chord_part"
        ).fetchall()
    connection.close()
    assert chords == [("g-1", 2)]
    assert parts == [("g-1", "t-0", 0, "SUCCESS", b"5")]


def test_a_chord_table_made_before_the_ready_column_gains_it(database: Path) -> None:
    """Chord tables an earlier celeriac created get the parts counter when first opened."""
    with sqlite3.connect(database) as connection:
        connection.execute(OLD_CHORD_TABLE.format(table="celeriac_chord"))
    connection.close()
    backend = SQLiteBackend(f"sqlite:///{database}")
    try:
        progress = two_part_chord(backend)
    finally:
        backend.close()

    assert progress.must_fire
    assert progress.results == [5, 6]

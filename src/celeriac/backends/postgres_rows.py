"""Rows of Celery's ``celery_taskmeta`` table to and from result metas (edge layer).

How values are encoded. Up to Celery 5.6 ``result`` was a SQLAlchemy ``PickleType``: a
pickle of the result value, whatever ``result_serializer`` said. Celery 5.7 stores the
result serializer's bytes of the value instead and reads old pickled rows as a fallback.
This backend writes as 5.7 does (serializer bytes of ``result``, and of ``args``,
``kwargs`` and ``children``, which both versions encode so). It reads both: a row that the
serializer cannot decode and that is a pickle is unpickled, but only when ``pickle`` is in
``accept``, so a Celery 5.6 table is read with ``accept_content=["json", "pickle"]``.
Celery 5.6 readers cannot read rows this backend writes. ``stamps`` is left null.

``celeriac_meta`` holds what the Celery columns cannot (``group_id``, ``parent_id``,
stamps, the field list) with the status it was written with, so a row a Celery worker
updated later is read from its columns only; ``celeriac_expires_at``, written by the
backend's statement, is when the result expires.
"""

from __future__ import annotations

import datetime
import pickle
from typing import Any

from celeriac import serialization
from celeriac.backends.base import Meta
from celeriac.backends.postgres_pool import Row
from celeriac.backends.postgres_schema import COLUMNS
from celeriac.exceptions import ContentDisallowed, DecodeError
from celeriac.protocol.result_meta import EXTENDED_FIELDS

# The columns a store writes after task_id and status: RowCodec.values gives all but the
# last, celeriac_expires_at, which the statement computes.
WRITTEN = [name for name in COLUMNS if name != "stamps"]
# The columns RowCodec.decode_row reads, in this order.
READ = ["task_id", "status", *WRITTEN[:-1]]

# Meta fields that have a column of their own, apart from date_done (kept as text when it
# does not survive the trip through a timestamp) and the text columns (kept aside when the
# value is not text).
_FIELD_COLUMNS = frozenset({"status", "result", "children", "args", "kwargs", "task_id"})
_TEXT_COLUMNS = ("traceback", "name", "worker", "queue")

# Stands for a meta field that has no column, where None would be a value.
_MISSING = object()


class RowCodec:
    """Encode metas into rows and values into columns with one serializer, and back."""

    def __init__(self, serializer: str, accept: frozenset[str]) -> None:
        self.serializer = serializer
        self.accept = accept
        self._codec = serialization.get_codec(serializer)

    def values(self, meta: Meta) -> tuple[Any, ...]:
        """Return the values of the ``WRITTEN`` columns but the last, for ``meta``."""
        date_done = _parse_date(meta.get("date_done"))
        retries = meta.get("retries")
        column_values: dict[str, Any] = {
            "date_done": date_done,
            "retries": retries if isinstance(retries, int) else None,
        }
        for name in _TEXT_COLUMNS:
            value = meta.get(name)
            column_values[name] = value if isinstance(value, str) else None
        rest: dict[str, Any] = {
            key: value
            for key, value in meta.items()
            if key not in _FIELD_COLUMNS and value != column_values.get(key, _MISSING)
        }
        if date_done is not None and _format_date(date_done) == meta["date_done"]:
            rest.pop("date_done")
        rest["celeriac_fields"] = list(meta)
        rest["celeriac_status"] = meta["status"]
        return (
            self.encode(meta.get("result")),
            date_done,
            column_values["traceback"],
            self.encode(meta.get("children")),
            column_values["name"],
            self.encode(meta.get("args")),
            self.encode(meta.get("kwargs")),
            column_values["worker"],
            column_values["retries"],
            column_values["queue"],
            serialization.dumps(rest, serializer=self.serializer)[2],
        )

    def decode_row(self, row: Row) -> Meta:
        """Return the meta a row of the ``READ`` columns holds."""
        (task_id, status, result, date_done, traceback, children, name, args, kwargs) = row[:9]
        worker, retries, queue, extra = row[9:]
        columns: Meta = {
            "status": status,
            "result": self.decode(result),
            "traceback": traceback,
            "children": self.decode(children) if children is not None else [],
            "date_done": None if date_done is None else _format_date(date_done),
            "name": name,
            "args": self.decode(args),
            "kwargs": self.decode(kwargs),
            "worker": worker,
            "retries": retries,
            "queue": queue,
            "task_id": task_id,
        }
        rest: Meta = {} if extra is None else self.decode(extra)
        if rest.get("celeriac_status") != status:
            # Written by Celery, or updated by a Celery worker after us.
            extended = any(columns[field] is not None for field in EXTENDED_FIELDS)
            return {
                key: value
                for key, value in columns.items()
                if extended or key not in EXTENDED_FIELDS
            }
        fields: list[str] = rest.pop("celeriac_fields")
        rest.pop("celeriac_status")
        merged = columns | rest
        return {field: merged[field] for field in fields}

    def encode(self, value: Any) -> bytes | None:
        """Return the serializer's bytes of ``value``; None stays NULL."""
        return None if value is None else serialization.dumps(value, serializer=self.serializer)[2]

    def decode(self, data: bytes | None) -> Any:
        """Return the value a column holds, in the serializer's bytes or as a Celery 5.6 pickle.

        Raises:
            ContentDisallowed: the content, or a pickle, is not in ``accept``.
        """
        if data is None:
            return None
        data = bytes(data)
        codec = self._codec
        try:
            return serialization.loads(
                data, codec.content_type, codec.content_encoding, accept=self.accept
            )
        except ContentDisallowed:
            raise
        except DecodeError:
            if not data.startswith(b"\x80"):
                raise
        # A pickle that Celery 5.6's PickleType column wrote (see the module docstring).
        if not self.accept & {"pickle", "application/x-python-serialize"}:
            raise ContentDisallowed(
                "refusing to unpickle a result written by Celery 5.6 or older: "
                "add 'pickle' to accept_content to read such rows"
            )
        return pickle.loads(data)


def _parse_date(value: Any) -> datetime.datetime | None:
    """Return ``value`` as a naive UTC datetime, as Celery's ``date_done`` column holds it."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime.datetime):
        return None
    if value.tzinfo is None:
        return value
    return value.astimezone(datetime.UTC).replace(tzinfo=None)


def _format_date(value: datetime.datetime) -> str:
    """Return a naive UTC ``date_done`` column as the ISO text Celery's metas carry."""
    return value.replace(tzinfo=datetime.UTC).isoformat()

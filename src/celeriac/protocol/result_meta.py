"""The result-meta dict every backend stores, and exceptions in it (core layer).

Field order and content follow what a Celery 5.7 worker writes (wire protocol §7.1), so
either side reads the other's results; exceptions travel as
``{"exc_type", "exc_message", "exc_module"}`` and are rebuilt as §7.2 describes, without
ever importing a module named by the stored data.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Mapping
from typing import Any

from celeriac import states
from celeriac.exceptions import DecodeError, SecurityError

__all__ = [
    "build_meta",
    "decode_exception",
    "encode_exception",
    "pending_meta",
    "result_from_meta",
]

# Extended-result fields (result_extended=True), in the order Celery writes them.
EXTENDED_FIELDS = ("name", "args", "kwargs", "worker", "retries", "queue")

# Results written by Celery name its modules; celeriac has the same classes under its own.
# billiard is where Celery's WorkerLostError and time-limit exceptions are defined, kombu
# its connection and decoding errors.
_MODULE_ALIASES = {
    "celery.exceptions": "celeriac.exceptions",
    "billiard.exceptions": "celeriac.exceptions",
    "kombu.exceptions": "celeriac.exceptions",
}

# Where Celery defines each of celeriac's namesake exceptions. They are stored under those
# modules, so a Celery reader rebuilds its own class and its ``except`` clauses match.
_CELERY_HOMES = {
    **dict.fromkeys(
        (
            "CeleryError", "ImproperlyConfigured", "NotRegistered", "AlreadyRegistered",
            "TimeoutError", "MaxRetriesExceededError", "TaskRevokedError", "QueueNotFound",
            "IncompleteStream", "ChordError", "SecurityError", "InvalidTaskError",
            "TaskPredicate", "Retry", "Ignore", "Reject", "WorkerTerminate", "WorkerShutdown",
        ),
        "celery.exceptions",
    ),
    **dict.fromkeys(
        ("WorkerLostError", "SoftTimeLimitExceeded", "TimeLimitExceeded"), "billiard.exceptions"
    ),
    **dict.fromkeys(
        (
            "OperationalError", "SerializationError", "EncodeError", "DecodeError",
            "ContentDisallowed",
        ),
        "kombu.exceptions",
    ),
}  # fmt: skip

# Synthetic classes for exception types this process does not have, by (module, qualname):
# the same stored type must always rebuild as the same class, or ``except`` clauses and
# ``isinstance`` checks written against a first result would miss the next one.
_synthetic_classes: dict[tuple[str | None, str], type[Exception]] = {}


def encode_exception(exc: BaseException) -> dict[str, Any]:
    """Encode an exception as Celery stores it: type name, JSON-safe args and module.

    celeriac's own exceptions that Celery also has are stored under Celery's module.
    """
    exc_class = type(exc)
    module = exc_class.__module__
    if module == "celeriac.exceptions":
        module = _CELERY_HOMES.get(exc_class.__qualname__, module)
    return {
        "exc_type": exc_class.__qualname__,
        "exc_message": [_json_safe(arg) for arg in exc.args],
        "exc_module": module,
    }


def decode_exception(data: Mapping[str, Any]) -> BaseException:
    """Rebuild an exception from its stored dict (wire protocol §7.2).

    The class is looked up only among modules already imported; an unknown one becomes a
    synthetic Exception subclass of that name.

    Raises:
        SecurityError: the stored type names something that is not an exception class.
        DecodeError: the dict has no ``exc_type``.
    """
    qualname = data.get("exc_type")
    if not isinstance(qualname, str) or not qualname:
        raise DecodeError(f"not an encoded exception: {dict(data)!r}")
    module_name = data.get("exc_module")
    module_name = module_name if isinstance(module_name, str) else None
    message = data.get("exc_message", [])
    args = tuple(message) if isinstance(message, list | tuple) else (message,)
    found = _find_class(module_name, qualname)
    exc_class: type[BaseException]
    if found is None:
        exc_class = _synthetic_class(module_name, qualname)
    elif isinstance(found, type) and issubclass(found, BaseException):
        exc_class = found
    else:
        raise SecurityError(
            f"expected an exception class, got {module_name}.{qualname} with payload {list(args)!r}"
        )
    try:
        return exc_class(*args)
    except Exception:
        # The real class wants other constructor arguments; keep its name and args anyway.
        return _synthetic_class(module_name, qualname)(*args)


def build_meta(
    task_id: str,
    status: str,
    result: Any,
    *,
    traceback: str | None = None,
    children: list[Any] | None = None,
    date_done: datetime.datetime | str | None = None,
    group_id: str | None = None,
    parent_id: str | None = None,
    extended: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a result-meta dict in Celery's field order (wire protocol §7.1).

    An exception result of an exception state is encoded; ``date_done`` defaults to now for
    ready states and stays null otherwise. ``extended`` gives the ``result_extended`` fields:
    all six are written (null when missing), then any others it holds (stamps).
    """
    if status in states.EXCEPTION_STATES and isinstance(result, BaseException):
        result = encode_exception(result)
    if date_done is None and status in states.READY_STATES:
        date_done = datetime.datetime.now(datetime.UTC)
    meta: dict[str, Any] = {
        "status": status,
        "result": result,
        "traceback": traceback,
        "children": children if children is not None else [],
        "date_done": _isoformat(date_done),
    }
    if group_id is not None:
        meta["group_id"] = group_id
    if parent_id is not None:
        meta["parent_id"] = parent_id
    if extended is not None:
        for key in EXTENDED_FIELDS:
            meta[key] = extended.get(key)
        for key, value in extended.items():
            meta.setdefault(key, value)
    meta["task_id"] = task_id
    return meta


def result_from_meta(meta: Mapping[str, Any]) -> Any:
    """Return the stored value; an exception dict of an exception state is rebuilt."""
    result = meta.get("result")
    if (
        meta.get("status") in states.EXCEPTION_STATES
        and isinstance(result, Mapping)
        and "exc_type" in result
    ):
        return decode_exception(result)
    return result


def pending_meta(task_id: str) -> dict[str, Any]:
    """Return what a missing result reads as: PENDING with no result (wire protocol §8)."""
    return {
        "status": states.PENDING,
        "result": None,
        "traceback": None,
        "children": [],
        "date_done": None,
        "task_id": task_id,
    }


def _isoformat(moment: datetime.datetime | str | None) -> str | None:
    if not isinstance(moment, datetime.datetime):
        return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).isoformat()


def _json_safe(value: Any) -> Any:
    """Keep JSON-native values (tuples become lists); anything else becomes its repr."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _json_safe(item) for key, item in value.items()}
    return repr(value)


def _find_class(module_name: str | None, qualname: str) -> Any:
    """Walk ``qualname`` inside an already imported module; None when it is not there."""
    if module_name is None:
        return None
    for candidate in (_MODULE_ALIASES.get(module_name), module_name):
        found: Any = sys.modules.get(candidate) if candidate else None
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if found is not None:
            return found
    return None


def _synthetic_class(module_name: str | None, qualname: str) -> type[Exception]:
    key = (module_name, qualname)
    exc_class = _synthetic_classes.get(key)
    if exc_class is None:
        # Built at run time because the stored type is data, not code we have (§7.2 step 2).
        exc_class = type(
            qualname.rpartition(".")[2],
            (Exception,),
            {"__module__": module_name or "celeriac.exceptions", "__qualname__": qualname},
        )
        exc_class = _synthetic_classes.setdefault(key, exc_class)
    return exc_class

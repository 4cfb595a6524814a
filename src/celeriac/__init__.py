"""celeriac: a distributed task queue with Celery's API and wire protocol.

``from celeriac import Celery`` (or ``Celeriac``) is a drop-in for ``from celery import
Celery``. With no broker configured, an embedded SQLite file is the broker and the
result store, so nothing else needs to run.
"""

from celeriac.app import Celeriac, Celery
from celeriac.canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    xmap,
    xstarmap,
)
from celeriac.current import current_app, current_task, get_current_app
from celeriac.result import AsyncResult, EagerResult, GroupResult, ResultSet
from celeriac.shared_task import shared_task
from celeriac.task import Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "Celeriac",
    "Celery",
    "EagerResult",
    "GroupResult",
    "ResultSet",
    "Signature",
    "Task",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_task",
    "get_current_app",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "xmap",
    "xstarmap",
]

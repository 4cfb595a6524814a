"""The current app and task, and the pending shared tasks: the only process-global state.

``get_current_app()`` is the typed accessor; ``current_app`` and ``current_task`` are
proxies kept for code written against Celery.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task

_current_app: ContextVar[Celeriac | None] = ContextVar("celeriac_current_app", default=None)
_task_stack: ContextVar[tuple[Task[Any, Any], ...]] = ContextVar("celeriac_task_stack", default=())
_default_app: Celeriac | None = None
_default_app_lock = threading.Lock()
_all_apps: list[Celeriac] = []

# Constructors run on every app, present and future, for @shared_task.
_shared_task_constructors: list[Callable[[Celeriac], Any]] = []


def set_current_app(app: Celeriac) -> None:
    """Make ``app`` the current app of this thread and of threads started later."""
    global _default_app
    _current_app.set(app)
    _default_app = app


def get_current_app() -> Celeriac:
    """Return the current app, creating a default one if none was made yet."""
    app = _current_app.get() or _default_app
    if app is not None:
        return app
    with _default_app_lock:
        if _default_app is None:
            from celeriac.app import Celeriac

            Celeriac("default")
        assert _default_app is not None
        return _default_app


def register_app(app: Celeriac) -> None:
    """Remember ``app`` so that shared tasks declared later are added to it too."""
    _all_apps.append(app)
    for constructor in list(_shared_task_constructors):
        constructor(app)


def connect_on_app_finalize(constructor: Callable[[Celeriac], Any]) -> None:
    """Run ``constructor`` on every app that exists now and every app made later."""
    _shared_task_constructors.append(constructor)
    for app in list(_all_apps):
        constructor(app)


def get_current_task() -> Task[Any, Any] | None:
    """Return the task executing in this thread or coroutine, if any."""
    stack = _task_stack.get()
    return stack[-1] if stack else None


@contextlib.contextmanager
def task_running(task: Task[Any, Any]) -> Iterator[None]:
    """Mark ``task`` as the current task for the duration of the block."""
    token = _task_stack.set((*_task_stack.get(), task))
    try:
        yield
    finally:
        _task_stack.reset(token)


class _Proxy:
    """Forward attribute access to an object looked up at each use."""

    __slots__ = ("_lookup",)

    def __init__(self, lookup: Callable[[], Any]) -> None:
        object.__setattr__(self, "_lookup", lookup)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lookup(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._lookup(), name, value)

    def __bool__(self) -> bool:
        return bool(self._lookup())

    def __eq__(self, other: object) -> bool:
        return bool(self._lookup() == other)

    def __hash__(self) -> int:
        return hash(self._lookup())

    def __repr__(self) -> str:
        return repr(self._lookup())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._lookup()(*args, **kwargs)


current_app: Any = _Proxy(get_current_app)
current_task: Any = _Proxy(get_current_task)

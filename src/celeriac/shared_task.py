"""``@shared_task``: a task declared for every app, bound to the app in use when it is used.

Celery's ``celery.shared_task``: libraries declare their tasks without an app of their
own; each app made later registers them, and a call goes to the current app's task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from celeriac import current

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task

__all__ = ["SharedTask", "shared_task"]

P = ParamSpec("P")
R = TypeVar("R")


@overload
def shared_task(fun: Callable[P, R], /) -> Task[P, R]: ...


@overload
def shared_task(**options: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def shared_task(fun: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a task for every app: the one in use when it is called is used."""

    def create(function: Callable[..., Any]) -> SharedTask:
        def add_to(app: Celeriac) -> None:
            decorate: Callable[[Callable[..., Any]], Task[Any, Any]] = app.task(**options)
            decorate(function)

        current.connect_on_app_finalize(add_to)
        return SharedTask(function, options.get("name"))

    if fun is not None:
        return create(fun)
    return create


class SharedTask:
    """What ``@shared_task`` returns: the current app's task of that name, looked up at use."""

    def __init__(self, function: Callable[..., Any], name: str | None) -> None:
        self.__wrapped__ = function
        self.__doc__ = function.__doc__
        self._name = name

    def _task(self) -> Task[Any, Any]:
        app = current.get_current_app()
        name = self._name or app.gen_task_name(
            self.__wrapped__.__name__, self.__wrapped__.__module__
        )
        if name not in app.tasks:
            app.task(self.__wrapped__)
        return app.tasks[name]

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._task(), attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self._task())

"""The task registry: task name to Task, with Celery's error for unknown names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac.exceptions import NotRegistered

if TYPE_CHECKING:
    from celeriac.task import Task


class TaskRegistry(dict[str, "Task[Any, Any]"]):
    """A dict of name -> Task that raises ``NotRegistered`` for a missing name."""

    def __missing__(self, name: str) -> Task[Any, Any]:
        raise NotRegistered(name)

    def register(self, task: Task[Any, Any]) -> None:
        """Add ``task`` under its name."""
        self[task.name] = task

    def unregister(self, name: str) -> None:
        """Remove the task named ``name``."""
        try:
            del self[name]
        except KeyError:
            raise NotRegistered(name) from None

    def regular(self) -> dict[str, Task[Any, Any]]:
        """Return the user's tasks, without celeriac's builtins."""
        return {name: task for name, task in self.items() if not name.startswith("celery.")}

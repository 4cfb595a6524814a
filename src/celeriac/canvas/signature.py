"""Signature: one task call (name, args, kwargs, options) as a dict that travels in messages.

A Signature is a ``dict`` with Celery's keys (task, args, kwargs, options, subtask_type,
immutable) so that it serializes to exactly the wire shape of protocol §2.4.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.result import AsyncResult, EagerResult
    from celeriac.task import Task


class Signature(dict[str, Any]):
    """A task name with partial arguments and options; call ``apply_async`` to send it."""

    def __init__(
        self,
        task: Task[Any, Any] | str | Mapping[str, Any] | None = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        type: Task[Any, Any] | None = None,
        subtask_type: str | None = None,
        immutable: bool = False,
        app: Celeriac | None = None,
        **extra_options: Any,
    ) -> None:
        self._app = app
        self._type = type
        if isinstance(task, Mapping):
            super().__init__(task)
            return
        if task is not None and not isinstance(task, str):
            self._type = task
            self._app = app or task.app
            task = task.name
        super().__init__(
            task=task,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            options=dict(options or {}, **extra_options),
            subtask_type=subtask_type,
            immutable=immutable,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: Celeriac | None = None) -> Signature:
        """Rebuild a signature from its dict form, as found in a message."""
        return cls(dict(data), app=app)

    @property
    def task(self) -> str:
        """The task name."""
        return str(self["task"])

    @property
    def args(self) -> list[Any]:
        """The partial positional arguments."""
        return list(self.get("args") or ())

    @property
    def kwargs(self) -> dict[str, Any]:
        """The partial keyword arguments."""
        return dict(self.get("kwargs") or {})

    @property
    def options(self) -> dict[str, Any]:
        """Options for ``apply_async``."""
        options: dict[str, Any] = self.setdefault("options", {})
        return options

    @property
    def immutable(self) -> bool:
        """True when the parent's result must not be prepended to the arguments."""
        return bool(self.get("immutable"))

    @property
    def subtask_type(self) -> str | None:
        """None for a plain task, else the primitive's name (chain, group, chord)."""
        value = self.get("subtask_type")
        return str(value) if value is not None else None

    @property
    def id(self) -> str | None:
        """The task id fixed for this signature, if any."""
        value = self.options.get("task_id")
        return str(value) if value is not None else None

    @property
    def app(self) -> Celeriac:
        """The app the signature is sent through."""
        if self._app is not None:
            return self._app
        if self._type is not None:
            return self._type.app
        from celeriac.current import get_current_app

        return get_current_app()

    @property
    def type(self) -> Task[Any, Any]:
        """The registered Task for this signature's name."""
        if self._type is None:
            self._type = self.app.tasks[self.task]
        return self._type

    def _merge(
        self,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        merged_options = dict(self.options, **options)
        if self.immutable:
            return self.args, self.kwargs, merged_options
        merged_args = [*(args or ()), *self.args]
        merged_kwargs = dict(self.kwargs, **(kwargs or {}))
        return merged_args, merged_kwargs, merged_options

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send the task: ``args`` are prepended to the partial ones unless immutable."""
        merged_args, merged_kwargs, merged_options = self._merge(args, kwargs, options)
        if self._type is None and self.task not in self.app.tasks:
            return self.app.send_task(self.task, merged_args, merged_kwargs, **merged_options)
        return self.type.apply_async(merged_args, merged_kwargs, **merged_options)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        """Shortcut for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[Any]:
        """Run the task here and now."""
        merged_args, merged_kwargs, merged_options = self._merge(args, kwargs, options)
        return self.type.apply(merged_args, merged_kwargs, **merged_options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task function directly in this process."""
        merged_args, merged_kwargs, _ = self._merge(args, kwargs, {})
        return self.type(*merged_args, **merged_kwargs)

    def clone(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """Return a copy with ``args`` prepended, ``kwargs`` and ``options`` merged in."""
        merged_args, merged_kwargs, merged_options = self._merge(args, kwargs, options)
        data = copy.deepcopy(dict(self))
        data.update(args=merged_args, kwargs=merged_kwargs, options=merged_options)
        return Signature(data, app=self._app, type=self._type)

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options (and immutability) in place; returns the signature."""
        if immutable is not None:
            self["immutable"] = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        """Make the signature ignore (or take) its parent's result."""
        self["immutable"] = immutable

    def freeze(self, _id: str | None = None, **options: Any) -> AsyncResult[Any]:
        """Fix the task id (and options) now, so the result is known before sending."""
        self.options.update(options)
        task_id = _id or self.options.get("task_id") or str(uuid.uuid4())
        self.options["task_id"] = task_id
        return self.app.AsyncResult(task_id)

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Add a callback applied with this task's result when it succeeds."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Add an errback applied when this task fails."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def __repr__(self) -> str:
        arguments = [repr(arg) for arg in self.args]
        arguments += [f"{key}={value!r}" for key, value in self.kwargs.items()]
        prefix = "%" if self.immutable else ""
        return f"{prefix}{self.task}({', '.join(arguments)})"

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        return Signature(copy.deepcopy(dict(self), memo), app=self._app, type=self._type)

    def __reduce__(self) -> tuple[Any, ...]:
        return Signature.from_dict, (dict(self),)


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """Make a Signature from a task, a task name, or a signature dict found in a message."""
    app = kwargs.get("app")
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, Mapping):
        return Signature.from_dict(varies, app=app)
    return Signature(varies, *args, **kwargs)


def maybe_signature(data: Any, app: Celeriac | None = None) -> Signature | None:
    """Return ``data`` as a Signature, or None for None."""
    if data is None:
        return None
    if isinstance(data, Signature):
        if app is not None and data._app is None:
            data._app = app
        return data
    return Signature.from_dict(data, app=app)

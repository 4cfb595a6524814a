"""Signature: one task call (name, args, kwargs, options) as a dict that travels in messages.

A Signature is a ``dict`` with Celery's keys (task, args, kwargs, options, subtask_type,
immutable) so that it serializes to exactly the wire shape of protocol §2.4. The
primitives (chain, group, chord) subclass it and register under their ``subtask_type``,
so a primitive found in a message comes back as its own class.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.result import AsyncResult, EagerResult
    from celeriac.task import Task

S = TypeVar("S", bound="type[Signature]")

# Options that place a task in a workflow: they go to the task whose result is the
# workflow's (the last of a chain, the body of a chord, every member of a group).
MEMBERSHIP_OPTIONS = ("group_id", "group_index", "chord")


class Signature(dict[str, Any]):
    """A task name with partial arguments and options; call ``apply_async`` to send it."""

    TYPES: ClassVar[dict[str, type[Signature]]] = {}

    @classmethod
    def register_type(cls, name: str) -> Callable[[S], S]:
        """Register a primitive class under its ``subtask_type`` for ``from_dict``."""

        def register(subclass: S) -> S:
            cls.TYPES[name] = subclass
            return subclass

        return register

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
        """Rebuild a signature from its dict form, as found in a message.

        A primitive's dict (``subtask_type`` chain, group or chord) becomes its class.
        """
        subclass = Signature.TYPES.get(str(data.get("subtask_type")))
        if subclass is not None and cls is not subclass:
            return subclass.from_dict(data, app=app)
        return Signature(dict(data), app=app)

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
        """The task id fixed for this signature (its result's id), if any."""
        value = self.options.get("task_id")
        return str(value) if value is not None else None

    @property
    def chord_size(self) -> int:
        """How many results this signature gives a chord it is a header member of."""
        return 1

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
        return self._rebuilt(data)

    def _rebuilt(self, data: dict[str, Any]) -> Signature:
        clone = Signature.from_dict(data, app=self._app)
        clone._type = self._type
        return clone

    def replace(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Signature:
        """Return a copy whose args, kwargs or options are replaced by those given."""
        data = copy.deepcopy(dict(self))
        if args is not None:
            data["args"] = list(args)
        if kwargs is not None:
            data["kwargs"] = dict(kwargs)
        if options is not None:
            data["options"] = dict(options)
        return self._rebuilt(data)

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options (and immutability) in place; returns the signature."""
        if immutable is not None:
            self["immutable"] = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        """Make the signature ignore (or take) its parent's result."""
        self["immutable"] = immutable

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
        **options: Any,
    ) -> Any:
        """Fix the task id (and workflow options) now, so the result is known before sending.

        Returns the result the signature will have: an AsyncResult here, a GroupResult
        for a group, the last task's result for a chain, the body's for a chord.
        """
        self.options.update(options)
        given = {
            "group_id": group_id,
            "chord": chord,
            "root_id": root_id,
            "parent_id": parent_id,
            "group_index": group_index,
        }
        self.options.update({key: value for key, value in given.items() if value is not None})
        task_id = _id or self.options.get("task_id") or str(uuid.uuid4())
        self.options["task_id"] = task_id
        return self.app.AsyncResult(task_id, task_name=self.get("task"))

    def freeze_for_sending(self, options: dict[str, Any]) -> Any:
        """Freeze with the workflow options of a send call, taking them out of ``options``.

        Root and parent default to the task running here, so that a workflow sent from
        a task is its child; what is left in ``options`` is for the messages.
        """
        lineage = running_task_lineage()
        return self.freeze(
            options.pop("task_id", None),
            root_id=options.pop("root_id", None) or lineage.get("root_id"),
            parent_id=options.pop("parent_id", None) or lineage.get("parent_id"),
            **{key: options.pop(key) for key in MEMBERSHIP_OPTIONS if key in options},
        )

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        """``a | b``: a chain; a group followed by anything is a chord."""
        if not isinstance(other, Signature):
            return NotImplemented
        from celeriac.canvas.chain import chain

        return chain(self, other, app=self._app)

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Add a callback applied with this task's result when it succeeds."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Add an errback applied when this task fails."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Mapping[str, Any]) -> Signature:
        """Add an errback and return this signature, for call chaining."""
        self.link_error(errback)
        return self

    def __repr__(self) -> str:
        arguments = [repr(arg) for arg in self.args]
        arguments += [f"{key}={value!r}" for key, value in self.kwargs.items()]
        prefix = "%" if self.immutable else ""
        return f"{prefix}{self.task}({', '.join(arguments)})"

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        return self._rebuilt(copy.deepcopy(dict(self), memo))

    def __reduce__(self) -> tuple[Any, ...]:
        return Signature.from_dict, (dict(self),)


class TaskList(Signature):
    """A primitive whose ``kwargs["tasks"]`` holds signatures: the base of chain and group."""

    TASK_NAME: ClassVar[str] = ""
    SUBTASK_TYPE: ClassVar[str] = ""

    def __init__(self, *tasks: Any, app: Celeriac | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            tasks = tuple(tasks[0])
        members = as_signatures(tasks, app=app)
        super().__init__(
            self.TASK_NAME,
            kwargs={"tasks": members},
            options=options,
            subtask_type=self.SUBTASK_TYPE,
            app=app or next((member._app for member in members if member._app), None),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: Celeriac | None = None) -> Self:
        """Rebuild the primitive from its dict form, its tasks as Signatures."""
        kwargs = data.get("kwargs") or {}
        rebuilt = cls(*as_signatures(kwargs.get("tasks") or (), app=app), app=app)
        rebuilt.update({key: value for key, value in data.items() if key != "kwargs"})
        rebuilt["kwargs"] = dict(kwargs, tasks=rebuilt.tasks)
        return rebuilt

    @property
    def tasks(self) -> list[Signature]:
        """The signatures held, in order."""
        tasks: list[Signature] = self["kwargs"]["tasks"]
        return tasks


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


def option_list(value: Any) -> list[Any]:
    """A ``link``/``link_error`` option (one signature, a list of them, or None) as a list."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    return list(value)


def running_task_lineage() -> dict[str, Any]:
    """parent_id/root_id for messages sent from the task running here ({} outside a task)."""
    from celeriac.task import current_request_options

    return current_request_options()


def add_to_running_task(result: Any) -> None:
    """Record ``result`` among the children of the task running here, if one is."""
    from celeriac.current import get_current_task

    task = get_current_task()
    if task is not None and task.trail and running_task_lineage():
        task.request.children.append(result)


def as_signatures(items: Any, app: Celeriac | None = None) -> list[Signature]:
    """Turn one signature or an iterable of them (dicts too) into a list of Signatures."""
    if isinstance(items, Mapping):
        items = [items]
    return [sig for sig in (maybe_signature(item, app=app) for item in items) if sig is not None]

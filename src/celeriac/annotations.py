"""Task annotations: ``task_annotations`` rewrites task attributes from the configuration.

Celery's shapes and order. An annotation is a dict of task name to attributes, with
``"*"`` for every task; an object whose ``annotate(task)`` returns attributes or None (and
whose ``annotate_any()``, if it has one, returns attributes for every task); or the import
path of such an object or its class. The setting holds one annotation or a list of them.
From a list, the first annotation that matches the task by name gives its attributes, then
the first that has a ``"*"`` entry gives those, applied last, so they win over the
task's own entry, as in Celery.

A key starting with ``@`` wraps the method it names: its value is ``around(method)``,
called with the unwrapped method, returning the function that replaces it. A plain
function given for a method (``on_failure``) becomes that method of the task.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from celeriac._imports import import_from_string

Attributes = Mapping[str, Any]


def resolve(annotations: Any, task: Any) -> Iterator[Attributes]:
    """The attribute maps that ``annotations`` give ``task``, in the order they apply."""
    prepared = [_prepare(annotation) for annotation in _as_list(annotations)]
    for method, arguments in (("annotate", (task,)), ("annotate_any", ())):
        for annotation in prepared:
            attributes = _call(annotation, method, *arguments)
            if attributes is not None:
                yield attributes
                break


def annotate(task: Any, annotations: Any) -> None:
    """Apply ``annotations`` (the ``task_annotations`` setting) to the task instance."""
    for attributes in resolve(annotations, task):
        for key, value in attributes.items():
            if key.startswith("@"):
                _wrap_method(task, key[1:], value)
            else:
                setattr(task, key, _as_method(task, key, value))


class _ByName:
    """A dict annotation: task name to attributes, ``"*"`` for every task."""

    def __init__(self, mapping: Mapping[str, Attributes]) -> None:
        self.mapping = mapping

    def annotate(self, task: Any) -> Attributes | None:
        return self.mapping.get(task.name)

    def annotate_any(self) -> Attributes | None:
        return self.mapping.get("*")


def _as_list(annotations: Any) -> list[Any]:
    if annotations is None:
        return []
    if isinstance(annotations, list | tuple):
        return list(annotations)
    return [annotations]


def _prepare(annotation: Any) -> Any:
    if isinstance(annotation, Mapping):
        return _ByName(annotation)
    if isinstance(annotation, str):
        annotation = import_from_string(annotation)
    if isinstance(annotation, type):
        return annotation()
    return annotation


def _call(annotation: Any, method: str, *arguments: Any) -> Attributes | None:
    function = getattr(annotation, method, None)
    return function(*arguments) if callable(function) else None


def _method_function(task: Any, name: str) -> Any:
    """The function behind the task's method ``name``, without earlier ``@`` wrappers."""
    method = getattr(task, name)
    function = getattr(method, "__func__", method)
    return getattr(function, "__wrapped__", function)


def _wrap_method(task: Any, name: str, around: Callable[..., Any]) -> None:
    original = _method_function(task, name)
    wrapped = around(original)
    wrapped.__wrapped__ = original
    setattr(task, name, types.MethodType(wrapped, task))


def _as_method(task: Any, key: str, value: Any) -> Any:
    """Bind a plain function given for one of the task class's methods, as Celery, which
    sets annotations on the class, would."""
    if isinstance(value, types.FunctionType) and isinstance(
        getattr(type(task), key, None), types.FunctionType
    ):
        return types.MethodType(value, task)
    return value

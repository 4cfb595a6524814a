"""``celery.utils.imports`` compatibility: ``qualname`` names an object as Celery does."""

from __future__ import annotations

from typing import Any

__all__ = ["qualname"]


def qualname(obj: Any) -> str:
    """Return the dotted name of ``obj``, or of its class when it is an instance.

    A top-level name is prefixed with its module (``proj.tasks.add``); a nested one is
    given as Python's ``__qualname__`` has it (``Outer.method``), as in Celery, which
    ``shadow_name`` functions rely on (seed 004).
    """
    if not hasattr(obj, "__name__") and hasattr(obj, "__class__"):
        obj = obj.__class__
    name = str(obj.__qualname__)
    return name if "." in name else f"{obj.__module__}.{name}"

"""Import a name a user wrote: ``pkg.mod``, ``pkg.mod:attr`` or ``pkg.mod.attr``.

This is the one place celeriac turns strings into objects, and only for names users
write (``-A proj``, ``config_from_object``, a ``base=`` path).
"""

from __future__ import annotations

import importlib
from typing import Any


def import_from_string(path: str) -> Any:
    """Import ``pkg.mod:attr.sub`` or ``pkg.mod.attr``; a bare module path gives the module."""
    module_name, _, attribute = path.partition(":")
    if attribute:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        head, _, tail = path.rpartition(".")
        if not head or exc.name != path:
            raise
        module = importlib.import_module(head)
        try:
            return getattr(module, tail)
        except AttributeError:
            raise ImportError(f"module {head!r} has no attribute {tail!r}") from None

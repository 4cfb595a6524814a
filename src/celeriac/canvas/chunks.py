"""chunks, xmap and xstarmap: one task applied to many argument sets in few messages.

``xmap``/``xstarmap`` send one message (the builtin ``celery.map``/``celery.starmap``
task) that calls the task for every item; ``chunks`` splits the items into parts of
``n`` and sends each part as an ``xstarmap``, all together as a group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.canvas.group import group
from celeriac.canvas.signature import Signature, maybe_signature

if TYPE_CHECKING:
    from celeriac.app import Celeriac


class _each(Signature):
    """A task applied to each item of ``it``, in one message to the builtin ``name``."""

    name = ""

    def __init__(
        self, task: Any, it: Iterable[Any], app: Celeriac | None = None, **options: Any
    ) -> None:
        sig = maybe_signature(task, app=app)
        super().__init__(
            self.name,
            kwargs={"task": sig, "it": [_plain(item) for item in it]},
            options=options,
            immutable=True,
            app=app or (sig._app if sig is not None else None),
        )


class xmap(_each):
    """Call the task with each item: ``xmap(double.s(), [1, 2, 3])`` gives ``[2, 4, 6]``."""

    name = "celery.map"


class xstarmap(_each):
    """Call the task with each item as arguments: ``xstarmap(add.s(), [(1, 2), (3, 4)])``."""

    name = "celery.starmap"


class chunks(Signature):
    """Split ``it`` into parts of ``n`` items, each run as one ``xstarmap`` task, in a group."""

    def __init__(
        self, task: Any, it: Iterable[Any], n: int, app: Celeriac | None = None, **options: Any
    ) -> None:
        if n < 1:
            raise ValueError(f"chunks needs a chunk size of at least 1, got {n}")
        sig = maybe_signature(task, app=app)
        super().__init__(
            "celery.chunks",
            kwargs={"task": sig, "it": [_plain(item) for item in it], "n": n},
            options=options,
            immutable=True,
            app=app or (sig._app if sig is not None else None),
        )

    def group(self) -> group:
        """The group of ``xstarmap`` tasks this stands for."""
        kwargs = self["kwargs"]
        task = maybe_signature(kwargs["task"], app=self._app)
        items, size = list(kwargs["it"]), int(kwargs["n"])
        parts = [items[start : start + size] for start in range(0, len(items), size)]
        return group(
            (xstarmap(task, part, app=self._app) for part in parts),
            app=self._app,
            **self.options,
        )

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        """Send the parts as a group; returns its GroupResult."""
        return self.group().apply_async(args, kwargs, **options)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run every part here; returns a GroupResult."""
        return self.group().apply(args, kwargs, **options)

    def __call__(self, *args: Any, **options: Any) -> Any:
        """``chunks(...)()`` sends it, as Celery's does."""
        return self.apply_async(args, **options)


def _plain(item: Any) -> Any:
    """An argument set as it travels in JSON: tuples become lists."""
    return list(item) if isinstance(item, tuple) else item


__all__ = ["chunks", "xmap", "xstarmap"]

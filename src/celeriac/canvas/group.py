"""group: tasks run in parallel; their results come back together as a GroupResult.

Every member is sent with the group's id and its position (``group`` and
``group_index`` headers), all in one batch when the broker can take one. A group
sent where a chain continues after it (a hop carrying a ``chain`` field) is a chord
with the rest of the chain as its body, as Celery treats it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from celeriac.canvas.signature import (
    Signature,
    TaskList,
    add_to_running_task,
    option_list,
)
from celeriac.result import GroupResult


@Signature.register_type("group")
class group(TaskList):
    """Run tasks in parallel: ``group(add.s(i, i) for i in range(10))()``."""

    TASK_NAME = "celery.group"
    SUBTASK_TYPE = "group"

    @property
    def chord_size(self) -> int:
        """Every member's results count in a chord this group is a header member of."""
        return sum(member.chord_size for member in self.tasks)

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Link ``callback`` to the first member only, immutable, as Celery does.

        It runs once, when that member succeeds, not after the whole group: for that,
        use a chord (``group | callback``).
        """
        immutable = Signature.from_dict(dict(callback), app=self._app).set(immutable=True)
        if self.tasks:
            self.tasks[0].link(immutable)
        return immutable

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Link ``errback`` to every member: it runs for each one that fails."""
        for member in self.tasks:
            member.link_error(errback)
        return errback

    def __len__(self) -> int:
        return len(self.tasks)

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
        **options: Any,
    ) -> GroupResult:
        """Fix the group id and every member's id now; returns the GroupResult.

        In a chord's header (``chord`` given) the members report to the chord: they take
        the chord's group id and consecutive positions from ``group_index``, one per
        result they give, so a nested group's results keep their order. That membership
        is kept in the options, so freezing again (when the group is sent) keeps it.
        """
        self.options.update(options)
        chord = chord if chord is not None else self.options.get("chord")
        if chord is not None:
            group_id = group_id or self.options.get("group_id")
            group_index = (
                group_index if group_index is not None else self.options.get("group_index")
            )
            membership = {"chord": chord, "group_id": group_id, "group_index": group_index}
            self.options.update(
                {key: value for key, value in membership.items() if value is not None}
            )
        own_id = (
            _id or self.options.get("task_id") or (None if chord else group_id) or str(uuid.uuid4())
        )
        self.options["task_id"] = own_id
        in_chord = chord is not None and group_id is not None
        position = group_index or 0 if in_chord else 0
        results = []
        for member in self.tasks:
            results.append(
                member.freeze(
                    group_id=group_id if in_chord else own_id,
                    group_index=position,
                    chord=chord,
                    root_id=root_id,
                    parent_id=parent_id,
                )
            )
            position += member.chord_size if in_chord else 1
        return GroupResult(own_id, results, app=self.app)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        """Send every member (in one batch where possible); return the GroupResult."""
        app = self.app
        options = dict(self.options, **options)
        following = options.pop("chain", None)
        if following:
            from celeriac.canvas.chain import chain
            from celeriac.canvas.chord import chord

            body = chain(*reversed(following), app=app)
            return chord(self, body, app=app).apply_async(args, kwargs, **options)
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        add_to_parent = options.pop("add_to_parent", True)
        result = self._frozen(options)
        from celeriac.publisher import batch_publish

        with batch_publish(app):
            for member in self.tasks:
                member.apply_async(args, kwargs, add_to_parent=False, **options)
        if add_to_parent:
            add_to_running_task(result)
        return result

    def _frozen(self, options: dict[str, Any]) -> GroupResult:
        """Freeze with the call's workflow options and callbacks, taking them out of ``options``."""
        for callback in option_list(options.pop("link", None)):
            self.link(callback)
        for errback in option_list(options.pop("link_error", None)):
            self.link_error(errback)
        result: GroupResult = self.freeze_for_sending(options)
        return result

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run every member here, one after another; returns a GroupResult of their results."""
        options = dict(self.options, **options)
        options.pop("chain", None)
        frozen = self._frozen(options)
        results = [member.apply(args, kwargs, **options) for member in self.tasks]
        return GroupResult(frozen.id, results, app=self.app)

    def __call__(self, *partial_args: Any, **options: Any) -> Any:
        """``group(...)()`` sends the group, as Celery's does."""
        return self.apply_async(partial_args, **options)

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        """``group | sig`` is a chord with ``sig`` as its body."""
        if not isinstance(other, Signature):
            return NotImplemented
        from celeriac.canvas.chord import chord

        return chord(self, other, app=self._app)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(member) for member in self.tasks)}])"


__all__ = ["group"]

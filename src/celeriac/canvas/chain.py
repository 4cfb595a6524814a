"""chain: tasks run one after another, each receiving the previous one's result.

The first task is sent with the others in its message's ``chain`` field, last hop
first (wire protocol §2.3); each worker sends the next hop when its task succeeds.
Before sending, a group followed by anything becomes a chord with that as its body,
and whatever follows a chord joins the chord's body, so a chord or group can only be
the chain's last step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from celeriac.canvas.signature import (
    Signature,
    TaskList,
    option_list,
)


@Signature.register_type("chain")
class chain(TaskList):
    """Run tasks in sequence: ``chain(a.s(1), b.s(), c.s())`` or ``a.s(1) | b.s() | c.s()``."""

    TASK_NAME = "celery.chain"
    SUBTASK_TYPE = "chain"

    @property
    def chord_size(self) -> int:
        """A chain gives a chord what its last step gives."""
        steps = self.steps()
        return steps[-1].chord_size if steps else 0

    def steps(self) -> list[Signature]:
        """Copies of the steps as they will be sent: nested chains flattened, the chain's own
        args given to the first, and a group or chord joined with everything after it."""
        flat = list(_flatten(self.tasks))
        if flat and self.args:
            flat[0] = flat[0].clone(self.args)
        folded: list[Signature] = []
        for step in reversed(flat):
            if folded and _is_fan_out(step):
                rest = list(reversed(folded))
                folded.clear()
                step = _fold(step, rest[0] if len(rest) == 1 else chain(*rest, app=step._app))
            folded.append(step)
        return list(reversed(folded))

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
        """Fix every step's id now; returns the last step's result, linked to its parents.

        The steps are frozen in place (so sending later uses these ids), and the chain's
        result id, ``_id``, goes to the last step with its group membership.
        """
        steps = self.steps()
        self["kwargs"]["tasks"] = steps
        self.options.update(options)
        if not steps:
            return None
        membership = {"group_id": group_id, "chord": chord, "group_index": group_index}
        last_id = _id or self.options.get("task_id")
        root_id = root_id or self.options.get("root_id")
        previous = None
        for index, step in enumerate(steps):
            is_last = index == len(steps) - 1
            result = step.freeze(
                last_id if is_last else None,
                root_id=root_id,
                parent_id=parent_id if index == 0 else None,
                **(membership if is_last else {}),
            )
            root_id = root_id or step.id
            if previous is not None and getattr(result, "parent", None) is None:
                result.parent = previous
            previous = result
        self.options["task_id"] = steps[-1].id
        return previous

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        """Send the first step with the rest in its ``chain`` field; return the last result."""
        app = self.app
        options = dict(self.options, **options)
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        if not self._prepared(args, kwargs, options):
            return None
        result = self.freeze_for_sending(options)
        first, rest = self.tasks[0], self.tasks[1:]
        remaining = [*(options.pop("chain", None) or ()), *reversed(rest)]
        first.apply_async(chain=remaining or None, **options)
        return result

    def _prepared(
        self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None, options: dict[str, Any]
    ) -> list[Signature]:
        """Fold the steps, give the first one ``args``, and spread ``link``/``link_error``.

        ``link`` runs after the last step; ``link_error`` on whichever step fails.
        """
        steps = self.steps()
        if steps and (args or kwargs):
            steps[0] = steps[0].clone(args, kwargs)
        for callback in option_list(options.pop("link", None)):
            steps[-1].link(callback)
        for errback in option_list(options.pop("link_error", None)):
            for step in steps:
                step.link_error(errback)
        self["kwargs"]["tasks"] = steps
        return steps

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run every step here, in order; a failing step's exception is raised, as Celery does."""
        options = dict(self.options, **options)
        options.pop("chain", None)
        steps = self._prepared(args, kwargs, options)
        last_id = options.pop("task_id", None)
        previous: Any = None
        for index, step in enumerate(steps):
            step_options = dict(options) if index == 0 else {}
            if index == len(steps) - 1 and last_id is not None:
                step_options["task_id"] = last_id
            parent_value = (previous.get(disable_sync_subtasks=False),) if previous else ()
            result = step.apply(parent_value, **step_options)
            if getattr(result, "parent", None) is None:
                result.parent = previous
            previous = result
        return previous

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``chain(...)()`` sends the chain, as Celery's does."""
        return self.apply_async(args, kwargs)

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        """Extend the chain; its options go along, but its result id is the new last step's."""
        if not isinstance(other, Signature):
            return NotImplemented
        following = other.tasks if isinstance(other, chain) else [other]
        options = {key: value for key, value in self.options.items() if key != "task_id"}
        return chain(*self.tasks, *following, app=self._app, **options)

    def __repr__(self) -> str:
        return " | ".join(repr(step) for step in self.tasks) or "chain()"


def _flatten(steps: Iterable[Signature]) -> Iterable[Signature]:
    for step in steps:
        if isinstance(step, chain) and not step.options:
            yield from _flatten(step.tasks)
        else:
            yield step.clone()


def _is_fan_out(step: Signature) -> bool:
    return step.subtask_type in ("group", "chord")


def _fold(step: Signature, follower: Signature) -> Signature:
    """Join a group or chord with what follows it: the follower becomes (or extends) a body."""
    from celeriac.canvas.chord import chord

    if isinstance(step, chord):
        return step.with_body(chain(step.body, follower, app=step._app))
    return chord(step, follower, app=step._app)


__all__ = ["chain"]

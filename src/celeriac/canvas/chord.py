"""chord: a header group whose results, once all are in, are handed to a body task.

No task polls for the header to finish. The client records the header's size in the
result backend before sending it; each worker that finishes a header task reports it
to the backend's chord counter (``report_chord_part``), and the one report that
completes the chord sends the body with the header results in header order. A failed
header task fails the chord instead: the body's result is a ChordError and its
errbacks run, so nothing waits forever.
"""

from __future__ import annotations

import copy
import logging
import traceback
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.canvas.group import group
from celeriac.canvas.signature import (
    MEMBERSHIP_OPTIONS,
    Signature,
    add_to_running_task,
    maybe_signature,
    option_list,
)
from celeriac.context import Context
from celeriac.exceptions import ChordError
from celeriac.protocol.result_meta import build_meta, decode_exception, encode_exception
from celeriac.result import EagerResult, GroupResult

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.base import ChordProgress

logger = logging.getLogger("celeriac.canvas")


@Signature.register_type("chord")
class chord(Signature):
    """Run ``header`` in parallel, then ``body`` with the list of its results.

    ``chord(header)(body)`` and ``chord(header, body)()`` send it; ``group | body``
    makes one too.
    """

    def __init__(
        self,
        header: Any = (),
        body: Any = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        app: Celeriac | None = None,
        **options: Any,
    ) -> None:
        header_group = header if isinstance(header, group) else _as_group(header, app)
        body_signature = maybe_signature(body, app=app)
        super().__init__(
            "celery.chord",
            args=args,
            kwargs={"kwargs": dict(kwargs or {}), "header": header_group, "body": body_signature},
            options=options,
            subtask_type="chord",
            app=app or header_group._app or (body_signature._app if body_signature else None),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: Celeriac | None = None) -> chord:
        """Rebuild a chord from its dict form."""
        kwargs = data.get("kwargs") or {}
        rebuilt = cls(kwargs.get("header") or (), kwargs.get("body"), app=app)
        rebuilt.update({key: value for key, value in data.items() if key != "kwargs"})
        rebuilt["kwargs"] = dict(kwargs, header=rebuilt.header, body=rebuilt.body)
        return rebuilt

    @property
    def header(self) -> group:
        """The tasks run in parallel."""
        header: group = self["kwargs"]["header"]
        return header

    @property
    def tasks(self) -> list[Signature]:
        """The header's tasks."""
        return self.header.tasks

    @property
    def body(self) -> Signature:
        """The task that receives the header's results."""
        body: Signature | None = self["kwargs"]["body"]
        if body is None:
            raise ValueError("this chord has no body: call chord(header)(body)")
        return body

    @property
    def chord_size(self) -> int:
        """A chord gives a chord it is a header member of what its body gives."""
        return self.body.chord_size

    def with_body(self, body: Signature) -> chord:
        """Return this chord with another body (whose id is then the chord's).

        The header is shared, not copied: sending either chord freezes the same tasks,
        and copying a header of thousands of tasks costs more than sending it.
        """
        options = {key: value for key, value in self.options.items() if key != "task_id"}
        return chord(
            self.header,
            body,
            args=self.args,
            kwargs=self["kwargs"].get("kwargs"),
            app=self._app,
            **copy.deepcopy(options),
        )

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Add a callback of the body: it runs once, with the body's result."""
        return self.body.link(callback)

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        """Add an errback of the body: it runs when the body or the chord fails."""
        return self.body.link_error(errback)

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
        """Fix the header's group id and every id now; returns the body's result.

        The body takes the chord's own workflow membership (when this chord is itself
        part of a group or another chord's header); the header members take this chord.
        """
        self.options.update(options)
        header_id = self.header.id or str(uuid.uuid4())
        body_result = self.body.freeze(
            _id or self.options.get("task_id"),
            group_id=group_id,
            chord=chord,
            group_index=group_index,
            root_id=root_id,
        )
        if self.body.subtask_type is None:
            self.body.options.setdefault("group_id", header_id)
        header_result = self.header.freeze(
            header_id, group_id=header_id, chord=self.body, root_id=root_id, parent_id=parent_id
        )
        body_result.parent = header_result
        self.options["task_id"] = self.body.id
        return body_result

    def __call__(self, body: Any = None, **options: Any) -> Any:
        """``chord(header)(body)``: send the chord with this body."""
        given = maybe_signature(body, app=self._app)
        return (self.with_body(given) if given is not None else self).apply_async(**options)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        """Record the header size, send the header tasks; return the body's result.

        A header with nested groups is saved first (as Celery saves it), so that the
        body gets their results nested.
        """
        target = self._with_call_options(kwargs, options)
        app = target.app
        options = dict(target.options, **options)
        if app.conf.task_always_eager:
            return target.apply(args, **options)
        from celeriac.publisher import batch_publish

        result = target.freeze_for_sending(options)
        header_id = str(target.header.id)
        size = target.header.chord_size
        if size != len(target.header.tasks):
            app.backend.save_group(header_id, list(result.parent.as_tuple()))
        progress = app.backend.set_chord_size(header_id, size)
        if progress.must_fire:
            fire_chord(app, header_id, target.body, progress, {"root_id": result.id})
            return result
        add_to_parent = options.pop("add_to_parent", True)
        with batch_publish(app):
            for member in target.header.tasks:
                member.apply_async(args, add_to_parent=False, **options)
        if add_to_parent:
            add_to_running_task(result.parent)
        return result

    def _with_call_options(
        self, kwargs: Mapping[str, Any] | None, options: dict[str, Any]
    ) -> chord:
        """Take a body given at call time, the rest of an enclosing chain, and ``link`` and
        ``link_error`` given at call time into the body (they are the chord's)."""
        target = self
        body = (kwargs or {}).get("body")
        given = maybe_signature(body, app=self._app)
        if given is not None:
            target = target.with_body(given)
        following = options.pop("chain", None)
        if following:
            from celeriac.canvas.chain import chain

            target = target.with_body(chain(target.body, *reversed(following), app=self._app))
        for callback in option_list(options.pop("link", None)):
            target.link(callback)
        for errback in option_list(options.pop("link_error", None)):
            target.link_error(errback)
        return target

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run the header here, then the body with its results, or fail the body.

        A failing header task fails the chord as it does on a worker: the body's
        result is a ChordError and its errbacks run.
        """
        target = self._with_call_options(kwargs, options)
        options = dict(target.options, **options)
        for key in MEMBERSHIP_OPTIONS:
            options.pop(key, None)
        body_id = options.pop("task_id", None)
        header_result = target.header.apply(args, **options)
        failed = next((leaf for leaf in _leaves(header_result) if leaf.failed()), None)
        if failed is not None:
            body = target.body.clone()
            body.freeze(body_id)
            exc = chord_error(failed.id, failed.result)
            fail_chord_body(target.app, body, exc, {"root_id": body.id}, eager=True)
            result: Any = EagerResult(str(body.id), exc, states.FAILURE, app=target.app)
        else:
            values = header_result.join(disable_sync_subtasks=False)
            result = target.body.apply((values,), **({"task_id": body_id} if body_id else {}))
        result.parent = header_result
        return result

    def __repr__(self) -> str:
        body = self["kwargs"].get("body")
        return f"chord({self.header!r}, {body!r})"


def _leaves(result: Any) -> list[Any]:
    """The single results of a group result, nested groups flattened."""
    if isinstance(result, GroupResult):
        return [leaf for member in result.results for leaf in _leaves(member)]
    return [result]


def _as_group(header: Any, app: Celeriac | None) -> group:
    if isinstance(header, Mapping):
        rebuilt = maybe_signature(header, app=app)
        if isinstance(rebuilt, group):
            return rebuilt
        return group(rebuilt, app=app)
    return group(*header, app=app) if not isinstance(header, Signature) else group(header)


def chord_error(task_id: str | None, reason: Any) -> ChordError:
    """The error a chord fails with when header task ``task_id`` failed with ``reason``.

    It is raised once so that its stored traceback, like Celery's, names where.
    """
    if isinstance(reason, Mapping):
        reason = decode_exception(reason)
    try:
        raise ChordError(f"Dependency {task_id} raised {reason!r}")
    except ChordError as error:
        return error


def report_chord_part(app: Celeriac, request: Context, state: str, result: Any) -> None:
    """Tell the chord of a finished header task about it; fire the chord if it completes.

    Called by the worker after it stored the task's ``state`` (SUCCESS, FAILURE or
    REVOKED), whether or not the result itself was kept.
    """
    group_id = request.group
    if not request.chord or group_id is None:
        return
    stored = encode_exception(result) if isinstance(result, BaseException) else result
    progress = app.backend.chord_part_done(
        group_id, str(request.id), request.group_index, state, stored
    )
    if progress.must_fire:
        lineage = {"parent_id": request.id, "root_id": request.root_id or request.id}
        fire_chord(app, group_id, request.chord, progress, lineage)


def fire_chord(
    app: Celeriac,
    group_id: str,
    body: Any,
    progress: ChordProgress,
    lineage: Mapping[str, Any],
) -> None:
    """Send the body with the header results, or fail it; then mark the chord finished."""
    callback = maybe_signature(body, app=app)
    assert callback is not None
    assert progress.claim is not None
    try:
        failure = progress.first_failure
        if failure is not None:
            exc = chord_error(failure.task_id, failure.result)
            fail_chord_body(app, callback, exc, lineage)
        else:
            results = progress.results
            if len(results) > 1:
                results = nested_like(app.backend.restore_group(group_id), results)
            callback.apply_async((results,), **lineage)
    except Exception as error:
        logger.exception("Chord %s: sending its body %r failed", group_id, callback)
        fail_chord_body(app, callback, ChordError(f"Callback error: {error!r}"), lineage)
    finally:
        app.backend.finish_chord(group_id, progress.claim)


def nested_like(structure: Any, results: list[Any]) -> list[Any]:
    """Give flat header results the nesting of the header's saved result tuple, if any.

    A header with nested groups reports one result per task, in order; the body gets
    them grouped as the header was (a saved ``[[id, parent], members]`` tuple).
    """
    if not structure:
        return results
    remaining = iter(results)

    def rebuild(members: list[Any]) -> list[Any]:
        return [
            rebuild(member[1]) if member[1] is not None else next(remaining) for member in members
        ]

    return rebuild(structure[1])


def fail_chord_body(
    app: Celeriac,
    body: Signature,
    exc: BaseException,
    lineage: Mapping[str, Any],
    *,
    eager: bool = False,
) -> None:
    """Store ``exc`` as the body's outcome and run the body's errbacks with it.

    In eager mode it is stored only with ``task_store_eager_result``, as eager results are.
    """
    from celeriac.execution import run_errbacks

    if not eager or app.conf.task_store_eager_result:
        traceback_text = "".join(traceback.format_exception(exc))
        for task_id in result_ids(body):
            app.store_meta(build_meta(task_id, states.FAILURE, exc, traceback=traceback_text))
    request = Context(
        id=body.id,
        task=body.get("task"),
        args=body.args,
        kwargs=body.kwargs,
        errbacks=body.options.get("link_error"),
        root_id=lineage.get("root_id"),
        parent_id=lineage.get("parent_id"),
        delivery_info={},
        called_directly=False,
        is_eager=eager,
    )
    run_errbacks(app, request, exc, None, eager=eager)


def result_ids(signature: Signature) -> list[str]:
    """The ids whose results a frozen signature's outcome is stored under."""
    if isinstance(signature, group):
        return [task_id for member in signature.tasks for task_id in result_ids(member)]
    if isinstance(signature, chord):
        return result_ids(signature.body)
    if signature.subtask_type == "chain":
        steps = signature["kwargs"]["tasks"]
        return result_ids(maybe_signature(steps[-1])) if steps else []  # type: ignore[arg-type]
    return [signature.id] if signature.id else []


__all__ = ["chord", "chord_error", "fail_chord_body", "fire_chord", "report_chord_part"]

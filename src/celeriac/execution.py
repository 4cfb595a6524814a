"""Run one task invocation: signals, states, handlers, outcome.

The same trace serves ``Task.apply`` (eager) and the worker, so a task behaves alike in
both. The order follows Celery's tracer: ``task_prerun``; the call; then on success
callbacks and the next chain hop, the stored result, ``on_success`` and
``task_success``; on retry the stored RETRY, ``on_retry`` and ``task_retry``; on
failure the stored FAILURE, errbacks, ``on_failure`` and ``task_failure``; then
``after_return`` and ``task_postrun``. On a worker, handlers and receivers that raise
are logged and never change the outcome; in eager mode, as in Celery, an error in
``on_success`` or in the trace itself is raised to the caller after ``task_internal_error``.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import os
import socket
import time
import traceback as traceback_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

from celeriac import signals, states
from celeriac.canvas.chord import report_chord_part
from celeriac.canvas.group import group
from celeriac.canvas.signature import Signature, maybe_signature, option_list
from celeriac.context import Context
from celeriac.current import task_running
from celeriac.exceptions import EncodeError, Ignore, Reject, Retry
from celeriac.protocol.result_meta import build_meta, encode_exception
from celeriac.result import AsyncResult, EagerResult, GroupResult
from celeriac.task import Task, current_request_options

logger = logging.getLogger("celeriac.execution")

IGNORED = states.IGNORED
REJECTED = states.REJECTED


@dataclass(slots=True)
class ExceptionInfo:
    """An exception with its traceback, as handlers and signals receive it (``einfo``)."""

    type: builtins.type[BaseException]
    exception: BaseException
    tb: TracebackType | None
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> ExceptionInfo:
        """Capture ``exc`` with its traceback formatted now."""
        formatted = "".join(traceback_module.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc), exc, exc.__traceback__, formatted)

    @property
    def exc_info(self) -> tuple[builtins.type[BaseException], BaseException, TracebackType | None]:
        """The ``sys.exc_info()`` triple."""
        return self.type, self.exception, self.tb

    def __str__(self) -> str:
        return self.traceback


@dataclass(slots=True)
class TraceOutcome:
    """What one invocation came to; ``retval`` is the value or the exception."""

    state: str
    retval: Any
    einfo: ExceptionInfo | None = None
    runtime: float = 0.0
    requeue: bool = False


def _call_quietly(what: str, function: Any, *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        logger.exception("%s raised an exception", what)


def _extended_fields(task: Task[Any, Any], request: Context) -> dict[str, Any] | None:
    if not task.app.conf.result_extended:
        return None
    delivery_info = request.delivery_info or {}
    return {
        "name": task.name,
        "args": list(request.args or ()),
        "kwargs": dict(request.kwargs or {}),
        "worker": request.hostname,
        "retries": request.retries,
        "queue": delivery_info.get("routing_key"),
    }


def _children(request: Context) -> list[Any]:
    return [child.as_tuple() for child in request.children or ()]


def _should_store(task: Task[Any, Any], request: Context, *, is_error: bool) -> bool:
    if request.is_eager and not task.option("store_eager_result"):
        return False
    ignored = request.ignore_result or task.option("ignore_result")
    if ignored:
        return is_error and bool(task.option("store_errors_even_if_ignored"))
    return True


def store_state(
    task: Task[Any, Any],
    request: Context,
    state: str,
    result: Any,
    *,
    traceback: str | None = None,
    is_error: bool = False,
) -> None:
    """Store a state for the request's task id, if results are kept for it."""
    if request.id is None or not _should_store(task, request, is_error=is_error):
        return
    if isinstance(result, AsyncResult | GroupResult):
        result = result.as_tuple()
    meta = build_meta(
        request.id,
        state,
        result,
        traceback=traceback,
        children=_children(request),
        group_id=request.group,
        parent_id=request.parent_id,
        extended=_extended_fields(task, request),
    )
    task.app.store_meta(meta, reply_to=request.reply_to)


def _follow_up(
    request: Context, signature: Signature, eager: bool, args: Sequence[Any], **options: Any
) -> Any:
    """Apply a callback or chain hop; a sent one is already a child through ``add_to_parent``."""
    if eager:
        result = signature.apply(args, **options)
        request.children.append(result)
        return result
    return signature.apply_async(args, **options)


def _run_callbacks(task: Task[Any, Any], request: Context, retval: Any, eager: bool) -> None:
    lineage = {"parent_id": request.id, "root_id": request.root_id or request.id}
    for callback in request.callbacks or ():
        signature = maybe_signature(callback, app=task.app)
        if signature is not None:
            _follow_up(request, signature, eager, (retval,), **lineage)
    chain = list(request.chain or ())
    if chain:
        next_hop = maybe_signature(chain.pop(), app=task.app)
        if next_hop is not None:
            _follow_up(request, next_hop, eager, (retval,), chain=chain, **lineage)


def _accepts_request_form(task: Task[Any, Any]) -> bool:
    try:
        parameters = inspect.signature(task.run).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        parameter
        for parameter in parameters
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    has_varargs = any(parameter.kind is parameter.VAR_POSITIONAL for parameter in parameters)
    return has_varargs or len(positional) > 1


def run_errbacks(
    app: Any, request: Context, exc: BaseException, traceback: str | None, *, eager: bool
) -> None:
    """Call the request's errbacks as Celery does.

    A registered errback task that takes more than one argument is called here as
    ``(request, exc, traceback)``; the others are sent together, as a group, with the
    failed task's id.
    """
    lineage = {"parent_id": request.id, "root_id": request.root_id or request.id}
    to_send = []
    for errback in request.errbacks or ():
        signature = maybe_signature(errback, app=app)
        if signature is None:
            continue
        errback_task = app.tasks.get(signature.task)
        if errback_task is not None and _accepts_request_form(errback_task):
            _call_quietly("errback", signature, request, exc, traceback)
        else:
            to_send.append(signature)
    if to_send:
        errbacks = group(to_send, app=app)
        _call_quietly(
            "errback", partial(_follow_up, request, errbacks, eager, (request.id,), **lineage)
        )


def _report_to_chord(task: Task[Any, Any], request: Context, state: str, result: Any) -> None:
    if request.chord and not request.is_eager:
        report_chord_part(task.app, request, state, result)


def _on_success(task: Task[Any, Any], request: Context, retval: Any, eager: bool) -> TraceOutcome:
    # As in Celery's tracer, a return value that cannot be sent on or stored fails the task.
    try:
        _run_callbacks(task, request, retval, eager)
    except EncodeError as exc:
        return _on_failure(task, request, exc, eager)
    try:
        store_state(task, request, states.SUCCESS, retval)
        _report_to_chord(task, request, states.SUCCESS, retval)
    except EncodeError as exc:
        return _on_failure(task, request, unencodable_result(task, exc), eager)
    if eager:
        # As in Celery, an error in the handler reaches the caller of apply().
        task.on_success(retval, request.id or "", request.args, request.kwargs)
    else:
        _call_quietly(
            "on_success", task.on_success, retval, request.id, request.args, request.kwargs
        )
    signals.task_success.send(sender=task, result=retval)
    return TraceOutcome(states.SUCCESS, retval)


def unencodable_result(task: Task[Any, Any], exc: EncodeError) -> EncodeError:
    """Say which task returned a value the result serializer cannot encode, and what to change."""
    serializer = task.app.conf.result_serializer
    error = EncodeError(
        f"Task {task.name} returned a value the {serializer} serializer cannot encode ({exc})."
        f" Return values {serializer} can encode, or choose a serializer that can with the"
        " result_serializer setting (and accept it with result_accept_content)."
    )
    error.__cause__ = exc  # the logged traceback then shows where encoding failed
    return error


def storable_exception(exc: BaseException) -> BaseException | dict[str, Any]:
    """``exc`` if it can be stored, else a readable stand-in keeping its type and module.

    Arguments the result serializer cannot take are stored as their repr already; this
    covers the rest, such as a repr that raises or arguments nested past the recursion
    limit. As Celery does, the stand-in keeps the type's name, so a reader still sees what
    was raised, with a message that says why its arguments are missing.
    """
    try:
        encode_exception(exc)
    except Exception as problem:  # a user's __repr__ may raise anything
        return {
            "exc_type": type(exc).__qualname__,
            "exc_message": [
                f"(the arguments of this {type(exc).__qualname__} could not be stored:"
                f" {type(problem).__name__}: {_describe(problem)})"
            ],
            "exc_module": type(exc).__module__,
        }
    return exc


def _describe(problem: BaseException) -> str:
    try:
        return str(problem)[:200]
    except Exception:
        return "its description failed too"


def safe_repr(value: Any, limit: int | None = None) -> str:
    """``repr(value)`` cut to ``limit``; if the repr itself fails, say so instead of raising."""
    try:
        text = repr(value)
    except Exception as problem:  # a user's __repr__ may raise anything
        return f"<{type(value).__qualname__} object; its repr() raised {type(problem).__name__}>"
    return text if limit is None else text[:limit]


def _on_retry(task: Task[Any, Any], request: Context, retry: Retry) -> TraceOutcome:
    einfo = ExceptionInfo.from_exception(retry)
    reason = retry.exc if isinstance(retry.exc, BaseException) else retry
    store_state(task, request, states.RETRY, reason, traceback=einfo.traceback, is_error=True)
    _call_quietly(
        "on_retry", task.on_retry, reason, request.id, request.args, request.kwargs, einfo
    )
    signals.task_retry.send(sender=task, request=request, reason=retry, einfo=einfo)
    return TraceOutcome(states.RETRY, retry, einfo)


def _on_failure(
    task: Task[Any, Any], request: Context, exc: BaseException, eager: bool
) -> TraceOutcome:
    einfo = ExceptionInfo.from_exception(exc)
    name = request.shadow or task.name
    if isinstance(exc, task.throws):
        logger.info("Task %s[%s] raised expected: %s", name, request.id, safe_repr(exc))
    elif not eager:
        logger.error(
            "Task %s[%s] raised unexpected: %s", name, request.id, safe_repr(exc), exc_info=exc
        )
    stored = storable_exception(exc)
    store_state(task, request, states.FAILURE, stored, traceback=einfo.traceback, is_error=True)
    _report_to_chord(task, request, states.FAILURE, stored)
    run_errbacks(task.app, request, exc, einfo.traceback, eager=eager)
    _call_quietly(
        "on_failure", task.on_failure, exc, request.id, request.args, request.kwargs, einfo
    )
    signals.task_failure.send(
        sender=task,
        task_id=request.id,
        exception=exc,
        args=request.args,
        kwargs=request.kwargs,
        traceback=einfo.tb,
        einfo=einfo,
    )
    return TraceOutcome(states.FAILURE, exc, einfo)


def _on_reject(task: Task[Any, Any], request: Context, reject: Reject) -> TraceOutcome:
    einfo = ExceptionInfo.from_exception(reject)
    if not reject.requeue:
        store_state(task, request, states.FAILURE, reject, traceback=einfo.traceback, is_error=True)
        _report_to_chord(task, request, states.FAILURE, reject)
    return TraceOutcome(REJECTED, reject, einfo, requeue=reject.requeue)


def _call_task(task: Task[Any, Any], request: Context) -> Any:
    args = request.args or ()
    kwargs = request.kwargs or {}
    task.before_start(request.id or "", args, kwargs)
    if type(task).__call__ is not Task.__call__:
        request._protected = True
        return task(*args, **kwargs)
    return task.run(*args, **kwargs)


def _outcome_of_call(task: Task[Any, Any], request: Context, eager: bool) -> TraceOutcome:
    try:
        retval = _call_task(task, request)
    except Retry as retry:
        return _on_retry(task, request, retry)
    except Ignore as ignore:
        return TraceOutcome(IGNORED, ignore)
    except Reject as reject:
        return _on_reject(task, request, reject)
    except Exception as exc:
        return _on_failure(task, request, exc, eager)
    return _on_success(task, request, retval, eager)


def trace_task(
    task: Task[Any, Any], request: Context, *, hostname: str | None = None, eager: bool = False
) -> TraceOutcome:
    """Run ``task`` for ``request`` and return the outcome; never raises for task errors."""
    started = time.monotonic()
    request.hostname = request.hostname or hostname
    request.called_directly = False
    task_id, args, kwargs = request.id, request.args, request.kwargs
    task.push_request(request.as_dict())
    current = task.request
    try:
        with task_running(task):
            signals.task_prerun.send(
                sender=task, task_id=task_id, task=task, args=args, kwargs=kwargs
            )
            if task.option("track_started") and not eager:
                store_state(
                    task, current, states.STARTED, {"pid": os.getpid(), "hostname": hostname}
                )
            outcome = _outcome_of_call(task, current, eager)
            einfo = outcome.einfo
            _call_quietly(
                "after_return",
                task.after_return,
                outcome.state,
                outcome.retval,
                task_id,
                args,
                kwargs,
                einfo,
            )
            signals.task_postrun.send(
                sender=task,
                task_id=task_id,
                task=task,
                args=args,
                kwargs=kwargs,
                retval=outcome.retval,
                state=outcome.state,
            )
    except Exception as exc:
        if eager:
            # Celery's eager tracer sends the signal and raises to the caller.
            _send_internal_error(task, current, exc, ExceptionInfo.from_exception(exc))
            raise
        outcome = report_internal_error(task, current, exc)
    finally:
        task.pop_request()
    outcome.runtime = time.monotonic() - started
    return outcome


def report_internal_error(
    task: Task[Any, Any], request: Context, exc: BaseException
) -> TraceOutcome:
    """Report an error in celeriac's handling of a task, not in the task itself.

    Logs it, sends ``task_internal_error`` and stores FAILURE with the error, so that a
    client waiting on the result hears of it instead of waiting forever.
    """
    einfo = ExceptionInfo.from_exception(exc)
    logger.critical("Internal error in task %s[%s]: %r", task.name, request.id, exc, exc_info=exc)
    _send_internal_error(task, request, exc, einfo)
    _call_quietly("storing the failure", store_state, task, request, states.FAILURE, exc)
    _call_quietly("reporting to the chord", _report_to_chord, task, request, states.FAILURE, exc)
    return TraceOutcome(states.FAILURE, exc, einfo)


def _send_internal_error(
    task: Task[Any, Any], request: Context, exc: BaseException, einfo: ExceptionInfo
) -> None:
    signals.task_internal_error.send(
        sender=task,
        task_id=request.id,
        args=request.args,
        kwargs=request.kwargs,
        request=request,
        exception=exc,
        traceback=einfo.tb,
        einfo=einfo,
    )


def apply_eagerly(
    task: Task[Any, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    task_id: str,
    link: Any,
    link_error: Any,
    retries: int,
    throw: bool,
    headers: Mapping[str, Any] | None,
    **options: Any,
) -> EagerResult[Any]:
    """Run ``task`` in this process, as ``Task.apply`` does, and return an EagerResult.

    A retry runs again at once (countdowns are not waited for), so the result is the
    final outcome, as users of eager mode expect.
    """
    lineage = current_request_options()
    request = Context(
        id=task_id,
        args=args,
        kwargs=kwargs,
        retries=retries,
        is_eager=True,
        callbacks=option_list(link) or None,
        errbacks=option_list(link_error) or None,
        chain=options.get("chain"),
        root_id=options.get("root_id") or lineage.get("root_id") or task_id,
        parent_id=options.get("parent_id") or lineage.get("parent_id"),
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        headers=dict(headers or {}),
        delivery_info={"is_eager": True, "priority": options.get("priority")},
        hostname=socket.gethostname(),
        ignore_result=bool(options.get("ignore_result")),
        loglevel=options.get("loglevel"),
        logfile=options.get("logfile"),
    )
    outcome = trace_task(task, request, hostname=request.hostname, eager=True)
    if outcome.state == states.RETRY and hasattr(outcome.retval, "eager_result"):
        eager_result: EagerResult[Any] = outcome.retval.eager_result
        return eager_result
    if throw and outcome.state == states.FAILURE and isinstance(outcome.retval, BaseException):
        raise outcome.retval
    traceback_text = outcome.einfo.traceback if outcome.einfo else None
    return EagerResult(
        task_id, outcome.retval, outcome.state, traceback_text, name=task.name, app=task.app
    )


__all__ = [
    "ExceptionInfo",
    "TraceOutcome",
    "apply_eagerly",
    "run_errbacks",
    "safe_repr",
    "storable_exception",
    "store_state",
    "trace_task",
    "unencodable_result",
]

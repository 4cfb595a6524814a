"""Request: one delivered task message as the worker handles it.

The main process reads only the headers (name, id, eta, expires, limits); the body is
decoded by ``execute_job`` in the process that runs the task, once.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from celeriac import states
from celeriac.context import Context
from celeriac.current import get_current_app
from celeriac.exceptions import DecodeError, InvalidTaskError, NotRegistered, SecurityError
from celeriac.execution import TraceOutcome, report_internal_error, safe_repr, trace_task
from celeriac.protocol.envelope import Envelope
from celeriac.protocol.message import TaskMessage
from celeriac.transports.base import Delivery
from celeriac.worker.pools.base import Job, JobOutcome

logger = logging.getLogger("celeriac.worker")

# Header keys that are part of the protocol, not custom headers a client added.
PROTOCOL_HEADERS = frozenset(
    {
        "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
        "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin",
        "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps", "compression",
        "redelivered", "meth",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class JobPayload:
    """What a pool process needs to run a task: the message, headers already parsed."""

    message: TaskMessage
    delivery_info: dict[str, Any]
    hostname: str


@dataclass(slots=True)
class Request:
    """A received task message, from the broker's delivery to its outcome."""

    delivery: Delivery
    message: TaskMessage
    hostname: str
    time_received: float = field(default_factory=time.time)
    time_start: float | None = None
    worker_pid: int | None = None
    acknowledged: bool = False

    @property
    def id(self) -> str:
        """The task id."""
        return self.message.id

    @property
    def name(self) -> str:
        """The task name."""
        return self.message.name

    @property
    def display_name(self) -> str:
        """The shadow name if one was given, else the task name."""
        return self.message.display_name

    @property
    def tag(self) -> str:
        """The delivery tag to acknowledge the message with."""
        return self.delivery.tag

    @property
    def delivery_info(self) -> dict[str, Any]:
        """Exchange, routing key, priority and redelivery flag of the message."""
        properties = self.message.properties
        info = dict(properties.get("delivery_info") or {})
        info.setdefault("exchange", "")
        info.setdefault("routing_key", self.delivery.queue)
        info["priority"] = properties.get("priority")
        info["redelivered"] = self.delivery.delivery_count > 1
        info["queue"] = self.delivery.queue
        return info

    def is_expired(self, now: datetime.datetime | None = None) -> bool:
        """True once the message's ``expires`` moment has passed."""
        expires = self.message.expires
        if expires is None:
            return False
        return expires <= (now or datetime.datetime.now(datetime.UTC))

    def eta_in_future(self, now: datetime.datetime | None = None) -> bool:
        """True if the message asks to run later than now."""
        eta = self.message.eta
        return eta is not None and eta > (now or datetime.datetime.now(datetime.UTC))

    def as_job(self, time_limit: float | None, soft_time_limit: float | None) -> Job:
        """Package the request for a pool; message limits win over the task's."""
        hard, soft = self.message.timelimit
        return Job(
            task_id=self.id,
            task_name=self.name,
            payload=JobPayload(self.message, self.delivery_info, self.hostname),
            time_limit=hard if hard is not None else time_limit,
            soft_time_limit=soft if soft is not None else soft_time_limit,
        )

    def message_envelope(self) -> Envelope:
        """The envelope as delivered."""
        return self.delivery.envelope

    def info(self, safe: bool = False) -> dict[str, Any]:
        """The request-info object of ``inspect active/reserved`` and the task-received event."""
        return {
            "id": self.id,
            "name": self.display_name,
            "args": self.message.argsrepr,
            "kwargs": self.message.kwargsrepr,
            "type": self.name,
            "hostname": self.hostname,
            "time_start": self.time_start,
            "acknowledged": self.acknowledged,
            "delivery_info": self.delivery_info,
            "worker_pid": self.worker_pid,
        }


def build_context(
    message: TaskMessage,
    args: Any,
    kwargs: Any,
    embed: dict[str, Any],
    payload: JobPayload,
) -> Context:
    """Make the task's ``request`` from the message, as Celery's worker does."""
    headers = message.headers
    custom = {key: value for key, value in headers.items() if key not in PROTOCOL_HEADERS}
    properties = message.properties
    context = Context(
        custom,
        id=message.id,
        task=message.name,
        args=args,
        kwargs=kwargs,
        retries=message.retries,
        eta=headers.get("eta"),
        expires=headers.get("expires"),
        group=message.group,
        group_index=message.group_index,
        root_id=message.root_id,
        parent_id=message.parent_id,
        timelimit=message.timelimit,
        origin=message.origin,
        shadow=message.shadow,
        correlation_id=properties.get("correlation_id"),
        reply_to=properties.get("reply_to"),
        delivery_info=payload.delivery_info,
        hostname=payload.hostname,
        callbacks=embed.get("callbacks"),
        errbacks=embed.get("errbacks"),
        chain=embed.get("chain"),
        chord=embed.get("chord"),
        headers=custom,
        properties=properties,
        ignore_result=bool(message.ignore_result),
        stamps=message.stamps,
        stamped_headers=message.stamped_headers,
        replaced_task_nesting=message.replaced_task_nesting,
        is_eager=False,
        called_directly=False,
    )
    return context


def execute_job(job: Job) -> JobOutcome:
    """Decode the message body and run its task here; the pool's target in every pool.

    A body that cannot be run (not ``[args, kwargs, embed]``, kwargs not a mapping, not
    decodable, nested past the recursion limit, expanding past ``worker_max_message_size``
    when decompressed) is an internal error of a known task: ``task_internal_error`` is sent and
    FAILURE stored here, and the worker dead-letters the message with the reason. A body
    that fails its signature check (``celeriac.security``) is refused instead: nothing in
    it is trusted, and the worker sends ``task_rejected``, stores FAILURE and dead-letters it.
    """
    app = get_current_app()
    payload: JobPayload = job.payload
    message = payload.message
    try:
        task = app.tasks[message.name]
    except NotRegistered as exc:
        return _undecodable(job, exc)
    accept, max_size = app.conf.accept_content, app.conf.worker_max_message_size
    try:
        args, kwargs, embed = message.decode_body(accept, max_size=max_size)
    except SecurityError as exc:
        return _refused(job, exc)
    except (DecodeError, InvalidTaskError) as exc:
        # Only a body of the wrong shape decoded; decoding any other again would fail again.
        args, kwargs = None, None
        if isinstance(exc, InvalidTaskError):
            args, kwargs = message.decode_sent_arguments(accept, max_size=max_size)
        report_internal_error(task, build_context(message, args, kwargs, {}, payload), exc)
        return _undecodable(job, exc)
    context = build_context(message, args, kwargs, embed, payload)
    outcome = trace_task(task, context, hostname=payload.hostname)
    info: dict[str, Any] = {"pid": os.getpid()}
    if outcome.state == states.SUCCESS:
        info["result"] = safe_repr(outcome.retval, task.resultrepr_maxsize)
    elif outcome.einfo is not None:
        exception = outcome.retval
        if outcome.state == states.RETRY and outcome.retval.exc is not None:
            exception = outcome.retval.exc
        info["exception"] = safe_repr(exception)
        info["traceback"] = outcome.einfo.traceback
    if logger.isEnabledFor(logging.INFO):
        _log_outcome(message.display_name, job.task_id, outcome, info)
    return JobOutcome(
        job.task_id, outcome.state, runtime=outcome.runtime, requeue=outcome.requeue, info=info
    )


def _log_outcome(name: str, task_id: str, outcome: TraceOutcome, info: dict[str, Any]) -> None:
    """Log Celery's INFO line for a success or a retry (failures are logged by the trace)."""
    if outcome.state == states.SUCCESS:
        logger.info(
            "Task %s[%s] succeeded in %.4fs: %s", name, task_id, outcome.runtime, info["result"]
        )
    elif outcome.state == states.RETRY:
        logger.info("Task %s[%s] retry: %s", name, task_id, outcome.retval)


def _undecodable(job: Job, exc: Exception) -> JobOutcome:
    return JobOutcome(
        job.task_id,
        states.REJECTED,
        info={"reason": f"{type(exc).__name__}: {exc}", "undecodable": True},
    )


def _refused(job: Job, exc: SecurityError) -> JobOutcome:
    """The outcome of a message that failed its signature check: its exception goes along."""
    return JobOutcome(
        job.task_id,
        states.REJECTED,
        exception=exc,
        info={"reason": f"{type(exc).__name__}: {exc}", "undecodable": True},
    )


__all__ = ["JobPayload", "Request", "build_context", "execute_job"]

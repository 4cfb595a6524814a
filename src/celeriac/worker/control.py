"""Remote-control commands a worker answers, in Celery's names and reply shapes (edge layer).

Each command is a function ``command(state, **arguments)`` registered in :class:`Panel`;
its return value is the node's reply (wire protocol §6.3). Users add their own with
Celery's decorators::

    from celeriac.worker.control import control_command, inspect_command

    @inspect_command()
    def current_prefetch_count(state):
        return {"prefetch_count": state.consumer.prefetch_count}

``state`` is a :class:`ControlState`: the worker and its parts.
"""

from __future__ import annotations

import os
import platform
import resource
import signal as signals_module
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from celeriac import __version__, states
from celeriac.backends.disabled import DisabledBackend
from celeriac.exceptions import ImproperlyConfigured, TaskRevokedError
from celeriac.protocol.result_meta import build_meta
from celeriac.rate_limits import parse_rate
from celeriac.transports import redact_url
from celeriac.worker.autoscale import grow, shrink

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.events.dispatcher import EventDispatcher
    from celeriac.worker.consumer import Consumer
    from celeriac.worker.controller import WorkController
    from celeriac.worker.pools.base import Pool

__all__ = ["ControlState", "Panel", "control_command", "inspect_command"]

Command = Callable[..., Any]
F = TypeVar("F", bound=Command)
# Stored states a revoke may overwrite with REVOKED: the task has not run (Celery 5.7).
REVOCABLE_STATES = frozenset({states.PENDING, states.RECEIVED, states.RETRY, states.REJECTED})


@dataclass(frozen=True, slots=True)
class ControlState:
    """What a command acts on: the worker, and shortcuts to its parts."""

    worker: WorkController

    @property
    def app(self) -> Celeriac:
        return self.worker.app

    @property
    def hostname(self) -> str:
        return self.worker.hostname

    @property
    def consumer(self) -> Consumer:
        assert self.worker.consumer is not None
        return self.worker.consumer

    @property
    def pool(self) -> Pool:
        assert self.worker.pool is not None
        return self.worker.pool

    @property
    def events(self) -> EventDispatcher:
        assert self.worker.events is not None
        return self.worker.events


@dataclass(frozen=True, slots=True)
class CommandMeta:
    """How a command is shown and called from the command line (Celery's fields)."""

    name: str
    type: str = "control"
    help: str | None = None
    signature: str | None = None
    args: Sequence[tuple[str, Callable[[str], Any]]] | None = None
    variadic: str | None = None
    default_timeout: float = 1.0
    visible: bool = True
    sends_reply: bool = True


class Panel:
    """The table of control commands: ``data`` by name, with their ``meta``."""

    data: ClassVar[dict[str, Command]] = {}
    meta: ClassVar[dict[str, CommandMeta]] = {}

    @classmethod
    def register(cls, *args: Any, **kwargs: Any) -> Any:
        """Register a command: ``@Panel.register`` or ``@Panel.register(name=..., type=...)``."""
        if args and callable(args[0]) and not kwargs:
            return cls._add(args[0], CommandMeta(name=args[0].__name__))

        def register(function: Command) -> Command:
            name = kwargs.pop("name", None) or function.__name__
            return cls._add(function, CommandMeta(name=name, **kwargs))

        return register

    @classmethod
    def _add(cls, function: Command, meta: CommandMeta) -> Command:
        cls.data[meta.name] = function
        cls.meta[meta.name] = meta
        return function


def control_command(**kwargs: Any) -> Callable[[F], F]:
    """Register a command that changes something on the workers."""
    decorator: Callable[[F], F] = Panel.register(type="control", **kwargs)
    return decorator


def inspect_command(**kwargs: Any) -> Callable[[F], F]:
    """Register a command that reports something from the workers."""
    decorator: Callable[[F], F] = Panel.register(type="inspect", **kwargs)
    return decorator


def ok(text: str) -> dict[str, str]:
    return {"ok": text}


def error(text: str) -> dict[str, str]:
    return {"error": text}


# ---- inspect ------------------------------------------------------------------------


@inspect_command(help="Ask the workers to answer pong.")
def ping(state: ControlState, **kwargs: Any) -> dict[str, str]:
    return ok("pong")


@inspect_command(help="Show the worker's logical clock.")
def clock(state: ControlState, **kwargs: Any) -> dict[str, int]:
    return {"clock": state.app.clock.value}


@inspect_command(help="Describe the worker's software, broker and settings, for bug reports.")
def report(state: ControlState, **kwargs: Any) -> dict[str, str]:
    app = state.app
    lines = [
        f"software -> celeriac:{__version__} py:{platform.python_version()}",
        f"            platform -> system:{platform.system()} arch:{platform.machine()}",
        f"broker -> {redact_url(app.broker_url)}",
        f"results -> {redact_url(str(app.conf.result_backend or 'disabled'))}",
    ]
    lines += [f"{name}: {value!r}" for name, value in sorted(_conf(state, False).items())]
    return ok("\n".join(lines))


@inspect_command(help="Show the worker's statistics: pool, totals, resource usage, broker.")
def stats(state: ControlState, **kwargs: Any) -> dict[str, Any]:
    worker_state = state.consumer.state
    reply = {
        "total": dict(worker_state.total),
        "pid": os.getpid(),
        "clock": str(state.app.clock.value),
        "uptime": int(worker_state.uptime()),
        "pool": state.pool.info(),
        "broker": _broker_info(state.app),
        "prefetch_count": state.consumer.prefetch_count,
        "rusage": _rusage(),
    }
    if state.worker.autoscaler is not None:
        reply["autoscaler"] = state.worker.autoscaler.info()
    return reply


@inspect_command(signature="[safe=False]", help="List the tasks the worker is running.")
def active(state: ControlState, safe: bool = False, **kwargs: Any) -> list[dict[str, Any]]:
    worker_state = state.consumer.state
    with worker_state.lock:
        requests = list(worker_state.active.values())
    return [request.info(safe=bool(safe)) for request in requests]


@inspect_command(
    signature="[safe=False]", help="List the tasks the worker fetched and has not started yet."
)
def reserved(state: ControlState, safe: bool = False, **kwargs: Any) -> list[dict[str, Any]]:
    worker_state = state.consumer.state
    with worker_state.lock:
        requests = list(worker_state.reserved.values())
    return [request.info(safe=bool(safe)) for request in requests]


@inspect_command(
    signature="[safe=False]",
    help="List the ETA tasks the worker holds (none: they wait in the broker).",
)
def scheduled(state: ControlState, **kwargs: Any) -> list[dict[str, Any]]:
    """Nothing: a celeriac worker puts ETA tasks back in the broker instead of holding them."""
    return []


@inspect_command(
    signature="[attr1 [attr2 [... [attrN]]]]",
    variadic="taskinfoitems",
    help="List the names of the tasks the worker knows.",
)
def registered(
    state: ControlState, taskinfoitems: Iterable[str] | None = None, **kwargs: Any
) -> list[str]:
    items = list(taskinfoitems or ())
    names = sorted(name for name in state.app.tasks if not name.startswith("celery."))
    if not items:
        return names
    described = []
    for name in names:
        task = state.app.tasks[name]
        fields = [f"{item}={getattr(task, item)}" for item in items if hasattr(task, item)]
        described.append(f"{name} [{' '.join(fields)}]" if fields else name)
    return described


@inspect_command(help="List the task ids the worker knows to be revoked.")
def revoked(state: ControlState, **kwargs: Any) -> list[str]:
    return state.consumer.state.revoked_ids()


@inspect_command(
    signature="[id1 [id2 [... [idN]]]]",
    variadic="ids",
    help="Tell where the worker holds these task ids.",
)
def query_task(
    state: ControlState, ids: str | Sequence[str] = (), **kwargs: Any
) -> dict[str, list[Any]]:
    wanted = {ids} if isinstance(ids, str) else set(ids)
    worker_state = state.consumer.state
    with worker_state.lock:
        held = [("active", r) for r in worker_state.active.values()]
        held += [("reserved", r) for r in worker_state.reserved.values()]
    return {r.id: [where, r.info()] for where, r in held if r.id in wanted}


@inspect_command(help="List the queues the worker consumes from.")
def active_queues(state: ControlState, **kwargs: Any) -> list[dict[str, Any]]:
    queues = state.app.amqp.queues
    return [queues[name].as_dict() for name in state.consumer.queues]


@inspect_command(signature="[include_defaults=False]", help="Show the worker's settings.")
def conf(state: ControlState, with_defaults: bool = False, **kwargs: Any) -> dict[str, Any]:
    return _conf(state, bool(with_defaults))


@inspect_command(visible=False)
def hello(
    state: ControlState, from_node: str = "", revoked: Iterable[str] | None = None, **kwargs: Any
) -> dict[str, Any] | None:
    """Celery's start-up exchange ("mingle"): take the peer's revoked ids, give ours."""
    if from_node == state.hostname:
        return None
    worker_state = state.consumer.state
    expires_at = _revoke_expiry(state)
    worker_state.merge_revokes({task_id: expires_at for task_id in revoked or ()})
    return {"revoked": worker_state.revoked_ids(), "clock": state.app.clock.forward()}


# ---- control ------------------------------------------------------------------------


@control_command(
    variadic="task_id",
    signature="[id1 [id2 [... [idN]]]]",
    help="Revoke tasks by id: the workers will not run them.",
)
def revoke(
    state: ControlState,
    task_id: str | Sequence[str] = (),
    terminate: bool = False,
    signal: str | int | None = None,
    **kwargs: Any,
) -> dict[str, str]:
    """Remember the ids as revoked; with ``terminate`` also end them where they run here.

    The ids are kept for ``worker_revoke_expires`` seconds; the client recorded them in
    the broker too (``celeriac.control``), for workers that are not listening now.
    """
    ids = [task_id] if isinstance(task_id, str) else list(task_id)
    expires_at = _revoke_expiry(state)
    state.consumer.state.merge_revokes({revoked_id: expires_at for revoked_id in ids})
    if terminate:
        signum = _signal_number(signal or "SIGTERM")
        ended = [tid for tid in ids if state.pool.terminate_job(tid, signum)]
        return ok(f"terminate: {', '.join(ended)}" if ended else "terminate: tasks unknown")
    _store_revoked(state, ids)
    listed = ", ".join(repr(revoked_id) for revoked_id in ids)
    return ok(f"tasks {{{listed}}} flagged as revoked")


@control_command(
    variadic="task_id",
    args=[("signal", str)],
    signature="<signal> [id1 [... ]]",
    help="Revoke tasks by id and end them where they run, with a signal.",
)
def terminate(
    state: ControlState, signal: str | int = "SIGTERM", task_id: str | Sequence[str] = (), **_: Any
) -> dict[str, str]:
    return revoke(state, task_id, terminate=True, signal=signal)


@control_command(
    args=[("task_name", str), ("rate_limit", str)],
    signature="<task_name> <rate>",
    help="Set a task type's rate limit (e.g. 10/m; 0 removes it).",
)
def rate_limit(
    state: ControlState, task_name: str = "", rate_limit: Any = None, **kwargs: Any
) -> dict[str, str]:
    task = state.app.tasks.get(task_name)
    if task is None:
        return error("unknown task")
    try:
        rate = parse_rate(rate_limit)
    except ImproperlyConfigured as exc:
        return error(f"Invalid rate limit string: {exc}")
    task.rate_limit = rate_limit if rate else None
    return ok("new rate limit set successfully" if rate else "rate limit disabled successfully")


@control_command(
    help="Set a task type's soft and hard time limits, in seconds.",
    args=[("task_name", str), ("soft", float), ("hard", float)],
    signature="<task_name> <soft_secs> [hard_secs]",
)
def time_limit(
    state: ControlState,
    task_name: str = "",
    soft: float | None = None,
    hard: float | None = None,
    **kwargs: Any,
) -> dict[str, str]:
    task = state.app.tasks.get(task_name)
    if task is None:
        return error("unknown task")
    task.soft_time_limit = soft
    task.time_limit = hard
    return ok("time limits set successfully")


@control_command(sends_reply=False, help="Stop the worker (warm shutdown).")
def shutdown(state: ControlState, msg: str = "Got shutdown from remote", **kwargs: Any) -> None:
    state.worker.stop(warm=True, sig="remote control shutdown")


@control_command(
    args=[("n", int)], signature="[N=1]", help="Add N processes or threads to the pool."
)
def pool_grow(state: ControlState, n: int = 1, **kwargs: Any) -> dict[str, str]:
    autoscaler = state.worker.autoscaler
    if autoscaler is not None:
        autoscaler.force_scale_up(int(n))
    else:
        grow(state.pool, state.consumer, int(n))
    return ok("pool will grow")


@control_command(
    args=[("n", int)], signature="[N=1]", help="Remove N processes or threads from the pool."
)
def pool_shrink(state: ControlState, n: int = 1, **kwargs: Any) -> dict[str, str]:
    autoscaler = state.worker.autoscaler
    if autoscaler is not None:
        autoscaler.force_scale_down(int(n))
    else:
        shrink(state.pool, state.consumer, int(n))
    return ok("pool will shrink")


@control_command(
    args=[("max", int), ("min", int)],
    signature="[max [min]]",
    help="Change the autoscaler's bounds.",
)
def autoscale(
    state: ControlState, max: int | None = None, min: int | None = None, **kwargs: Any
) -> dict[str, str]:
    autoscaler = state.worker.autoscaler
    if autoscaler is None:
        raise ValueError("Autoscale not enabled")
    return ok(autoscaler.update(max, min))


@control_command(help="Restart the pool's processes.")
def pool_restart(state: ControlState, **kwargs: Any) -> dict[str, str]:
    raise ValueError("Pool restarts not enabled")


@control_command(
    help="Start consuming from a queue.",
    args=[("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)],
    signature="<queue> [exchange [type [routing_key]]]",
)
def add_consumer(
    state: ControlState,
    queue: str = "",
    exchange: str | None = None,
    exchange_type: str | None = None,
    routing_key: str | None = None,
    **options: Any,
) -> dict[str, str]:
    if queue not in state.app.amqp.queues:
        state.app.amqp.queues.add(
            queue, exchange=exchange, exchange_type=exchange_type, routing_key=routing_key
        )
    if state.consumer.add_queue(queue):
        return ok(f"add consumer {queue}")
    return ok(f"already consuming from {queue}")


@control_command(args=[("queue", str)], signature="<queue>", help="Stop consuming from a queue.")
def cancel_consumer(state: ControlState, queue: str = "", **kwargs: Any) -> dict[str, str]:
    state.consumer.cancel_queue(queue)
    return ok(f"no longer consuming from {queue}")


@control_command(help="Start sending task events.")
def enable_events(state: ControlState, **kwargs: Any) -> dict[str, str]:
    events = state.events
    if "task" in events.groups:
        return ok("task events already enabled")
    events.groups = events.groups | {"task"}
    return ok("task events enabled")


@control_command(help="Stop sending task events.")
def disable_events(state: ControlState, **kwargs: Any) -> dict[str, str]:
    events = state.events
    if "task" not in events.groups:
        return ok("task events already disabled")
    events.groups = events.groups - {"task"}
    return ok("task events disabled")


@control_command(help="Send a worker-heartbeat event now.")
def heartbeat(state: ControlState, **kwargs: Any) -> None:
    if state.worker.heart is not None:
        state.worker.heart.beat()


# ---- helpers ------------------------------------------------------------------------


def _signal_number(signal: str | int) -> int:
    if isinstance(signal, int):
        return signal
    name = signal.upper()
    return int(getattr(signals_module, name if name.startswith("SIG") else f"SIG{name}"))


def _revoke_expiry(state: ControlState) -> float:
    """The Unix time at which a revoke received now expires (``worker_revoke_expires``)."""
    return time.time() + float(state.app.conf.worker_revoke_expires)


def _store_revoked(state: ControlState, ids: list[str]) -> None:
    """Store REVOKED for ids not running here whose stored state says they have not run."""
    app = state.app
    worker_state = state.consumer.state
    with worker_state.lock:
        running = {request.id for request in worker_state.active.values()}
    candidates = [task_id for task_id in ids if task_id not in running]
    if not candidates or isinstance(app.backend, DisabledBackend):
        return
    stored = app.backend.get_many(candidates)
    for task_id in candidates:
        meta = stored.get(task_id)
        if meta is None or meta.get("status") in REVOCABLE_STATES:
            app.store_meta(build_meta(task_id, states.REVOKED, TaskRevokedError("revoked")))


def _broker_info(app: Celeriac) -> dict[str, Any]:
    """The broker connection as Celery's stats show it; never the password.

    Of a failover list (``amqp://a;amqp://b``) the first URL is described and the others
    are the ``alternates``.
    """
    first, *alternates = app.broker_url.split(";")
    parts = urlsplit(first)
    path = parts.path.lstrip("/")
    return {
        "hostname": parts.hostname,
        "userid": parts.username,
        "virtual_host": path or "/",
        "port": parts.port,
        "insist": False,
        "ssl": parts.scheme in ("amqps", "rediss"),
        "transport": parts.scheme,
        "connect_timeout": app.conf.broker_connection_timeout,
        "transport_options": dict(app.conf.broker_transport_options),
        "login_method": None,
        "uri_prefix": None,
        "heartbeat": app.conf.broker_heartbeat,
        "failover_strategy": app._transport_options.get("failover_strategy") or "round-robin",
        "alternates": [redact_url(url) for url in alternates],
    }


RUSAGE_FIELDS = (
    "utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap",
    "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw",
)  # fmt: skip


def _rusage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {name: getattr(usage, f"ru_{name}") for name in RUSAGE_FIELDS}


SECRET_MARKERS = ("password", "secret", "key", "token", "url", "backend")


def _conf(state: ControlState, with_defaults: bool) -> dict[str, Any]:
    """Settings as ``inspect conf`` shows them: secrets masked, values made printable."""
    settings = state.app.conf
    chosen = dict(settings) if with_defaults else settings.without_defaults()
    return {name: _printable(name, value) for name, value in chosen.items()}


def _printable(name: str, value: Any) -> Any:
    if isinstance(value, str | bytes) and any(marker in name for marker in SECRET_MARKERS):
        return redact_url(value) if isinstance(value, str) and "://" in value else "********"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_printable(name, item) for item in value]
    if isinstance(value, dict):
        return {str(key): _printable(name, item) for key, item in value.items()}
    return repr(value)

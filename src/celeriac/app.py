"""Celeriac: the app. It holds the settings, the task registry and the broker and
result-store connections made from their URLs, and wires the parts together.

``Celery`` is an alias, so ``from celeriac import Celery`` is a drop-in.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from celeriac import current, signals, store_location
from celeriac.amqp import AMQP
from celeriac.backends.base import Meta, ResultBackend, replies_by_message
from celeriac.config import Settings, settings_module_from_envvar, settings_source
from celeriac.connection import Connection, ConnectionPool, ProducerPool
from celeriac.control import Control
from celeriac.dispatch import Signal
from celeriac.entity import bound_queues
from celeriac.events.clock import LamportClock
from celeriac.events.dispatcher import EventDispatcher
from celeriac.events.receiver import EventReceiver
from celeriac.events.state import State
from celeriac.messaging import Producer
from celeriac.registry import TaskRegistry
from celeriac.result import AsyncResult
from celeriac.retries import retry_while_unavailable
from celeriac.task import Task, make_task
from celeriac.transports.base import Transport

if TYPE_CHECKING:
    from celeriac.canvas.signature import Signature

P = ParamSpec("P")
R = TypeVar("R")

BROKER_ENVIRONMENT = ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL")
BACKEND_ENVIRONMENT = ("CELERIAC_RESULT_BACKEND", "CELERY_RESULT_BACKEND")


def _from_environment(names: Sequence[str]) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class Events:
    """``app.events``: factories for dispatchers and receivers bound to the app, and
    ``State``, the cluster state that monitors build from the events they receive."""

    State = State

    def __init__(self, app: Celeriac) -> None:
        self.app = app

    def Dispatcher(self, connection: Any = None, **kwargs: Any) -> EventDispatcher:
        """Create an EventDispatcher (seed 003) on the app's broker."""
        return EventDispatcher(connection or self.app.transport, app=self.app, **kwargs)

    def Receiver(self, channel: Any = None, **kwargs: Any) -> EventReceiver:
        """Create an EventReceiver on the app's broker."""
        return EventReceiver(channel or self.app.transport, app=self.app, **kwargs)

    @contextlib.contextmanager
    def default_dispatcher(
        self, hostname: str | None = None, enabled: bool = True, buffer_while_offline: bool = False
    ) -> Iterator[EventDispatcher]:
        """Lend a dispatcher for a few sends, flushed and closed afterwards."""
        dispatcher = self.Dispatcher(
            hostname=hostname, enabled=enabled, buffer_while_offline=buffer_while_offline
        )
        try:
            yield dispatcher
        finally:
            dispatcher.close()


class Celeriac:
    """The celeriac application: ``app = Celeriac("proj", broker=..., backend=...)``."""

    def __init__(
        self,
        main: str | None = None,
        *,
        broker: str | None = None,
        backend: str | None = None,
        include: Iterable[str] | None = None,
        config_source: Any = None,
        task_cls: type[Task[Any, Any]] | str | None = None,
        set_as_current: bool = True,
        namespace: str | None = None,
        changes: Mapping[str, Any] | None = None,
        strict_typing: bool = True,
        **settings: Any,
    ) -> None:
        self.main = main
        self.conf = Settings(changes)
        self.conf.update(settings)
        if broker is not None:
            self.conf.broker_url = broker
        if backend is not None:
            self.conf.result_backend = backend
        if include is not None:
            self.conf.include = tuple(include)
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)
        if isinstance(task_cls, str):
            from celeriac._imports import import_from_string

            task_cls = import_from_string(task_cls)
        self.Task: type[Task[Any, Any]] = task_cls or Task  # type: ignore[assignment]
        self.strict_typing = strict_typing
        self.tasks = TaskRegistry()
        self.clock = LamportClock()
        self.oid = str(uuid.uuid3(uuid.NAMESPACE_OID, f"{uuid.getnode()}:{os.getpid()}:{id(self)}"))
        self.events = Events(self)
        self.control = Control(self)
        self.amqp = AMQP(self)
        self.user_options: dict[str, set[Any]] = {"preload": set(), "worker": set()}
        self.on_after_configure = Signal(name="app.on_after_configure", providing_args={"source"})
        """Sent once, when beat starts (``finalize``), with ``source``: the settings."""
        self.on_after_finalize = Signal(name="app.on_after_finalize")
        """Sent once, after ``on_after_configure``, when beat starts (``finalize``)."""
        self.finalized = False
        self._autodiscover: list[tuple[Any, str]] = []
        self._transport: Transport | None = None
        self._backend: ResultBackend | None = None
        self._pool: ConnectionPool | None = None
        self._producer_pool: ProducerPool | None = None
        self._lock = threading.RLock()  # the rpc backend is made with the transport
        self._origin: tuple[int, str] = (0, "")
        self._source_file = store_location.defining_file(self)
        self._embedded_url: str | None = None
        from celeriac.builtins import register_builtins

        register_builtins(self)
        current.register_app(self)
        if set_as_current:
            current.set_current_app(self)

    # ---- configuration ---------------------------------------------------------------

    def config_from_object(
        self, obj: Any, silent: bool = False, force: bool = False, namespace: str | None = None
    ) -> None:
        """Load settings from a module path, module, class or mapping."""
        try:
            source = settings_source(obj)
        except Exception:
            if silent:
                return
            raise
        self.conf.load(source, namespace=namespace)

    def config_from_envvar(
        self, variable_name: str, silent: bool = False, force: bool = False
    ) -> None:
        """Load settings from the module named in an environment variable."""
        try:
            module = settings_module_from_envvar(variable_name)
        except Exception:
            if silent:
                return
            raise
        self.config_from_object(module, silent=silent, force=force)

    def finalize(self, auto: bool = False) -> None:
        """Send ``on_after_configure`` then ``on_after_finalize``, once.

        Handlers connected to them typically call ``add_periodic_task``; beat calls this
        before it reads ``beat_schedule``. Settings are read as they are set, so unlike
        Celery's there is nothing else to finalize.
        """
        if self.finalized:
            return
        self.finalized = True
        self.on_after_configure.send(sender=self, source=self.conf)
        self.on_after_finalize.send(sender=self)

    def setup_security(
        self,
        allowed_serializers: Iterable[str] | None = None,
        key: str | None = None,
        key_password: str | bytes | None = None,
        cert: str | None = None,
        store: str | None = None,
        digest: str | None = None,
        serializer: str = "json",
    ) -> None:
        """Set up message signing, process-wide (``celeriac.security.setup_security``)."""
        from celeriac.security import setup_security

        setup_security(
            allowed_serializers, key, key_password, cert, store, digest, serializer, app=self
        )

    def autodiscover_tasks(
        self,
        packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Import ``<package>.<related_name>`` for each package, now (force) or at worker start."""
        self._autodiscover.append((packages, related_name))
        if force:
            self._import_autodiscovered()

    def _import_autodiscovered(self) -> None:
        while self._autodiscover:
            packages, related_name = self._autodiscover.pop(0)
            names = packages() if callable(packages) else packages
            for package in names or ():
                try:
                    importlib.import_module(f"{package}.{related_name}")
                except ModuleNotFoundError as exc:
                    if exc.name != f"{package}.{related_name}":
                        raise

    def import_default_modules(self) -> None:
        """Import ``imports``, ``include`` and autodiscovered modules; sends ``import_modules``."""
        signals.import_modules.send(sender=self)
        for module in (*self.conf.imports, *self.conf.include):
            importlib.import_module(module)
        self._import_autodiscovered()

    # ---- tasks -----------------------------------------------------------------------

    @overload
    def task(self, fun: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, /, *, bind: Literal[True], **options: Any
    ) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...

    @overload
    def task(self, /, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, fun: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorate a function to make it a task: ``@app.task`` or ``@app.task(bind=True)``."""

        def create(function: Callable[..., Any]) -> Task[Any, Any]:
            task = make_task(self, function, **options)
            existing = self.tasks.get(task.name)
            if existing is not None and getattr(existing, "__wrapped__", None) is function:
                return existing
            self.tasks.register(task)
            return task

        if fun is not None:
            return create(fun)
        return create

    def register_task(self, task: Task[Any, Any] | type[Task[Any, Any]]) -> Task[Any, Any]:
        """Register a class-based task (an instance or its class)."""
        instance = task() if isinstance(task, type) else task
        if not instance.name:
            cls = type(instance)
            instance.name = self.gen_task_name(cls.__name__, cls.__module__)
        instance.bind(self)
        self.tasks.register(instance)
        return instance

    def gen_task_name(self, name: str, module: str) -> str:
        """Name a task ``module.function``; ``__main__`` is replaced by the app's main name."""
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send a task by name, without needing its code in this process."""
        from celeriac.publisher import send_task_message

        options.pop("task_type", None)
        options.pop("result_cls", None)
        options.pop("router", None)
        options.pop("route_name", None)
        return send_task_message(self, name, args, kwargs, **options)

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Signature | Task[Any, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Add a ``beat_schedule`` entry that sends ``sig`` on ``schedule`` (seconds, a
        timedelta or a ``celeriac.schedules`` schedule); return the entry's name.

        ``args`` and ``kwargs`` are added to the signature's; ``opts`` (``queue``,
        ``expires``, ``priority``...) to its options. The name is ``name``, else the
        signature's repr, as in Celery.
        """
        from celeriac.canvas.signature import Signature

        if isinstance(sig, Signature):
            signature = sig.clone(args, kwargs or {})
        else:
            signature = self.signature(sig.name, args, kwargs or {})
        key = name or repr(signature)
        self.conf.beat_schedule[key] = {
            "schedule": schedule,
            "task": signature.task,
            "args": tuple(signature.args),
            "kwargs": dict(signature.kwargs),
            "options": {**signature.options, **opts},
        }
        return key

    def signature(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature on this app: ``app.signature("tasks.add", args=(2,), queue="q")``."""
        from celeriac.canvas.signature import Signature

        return Signature(*args, **{**kwargs, "app": self})

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult[Any]:
        """Return the result handle of a task id."""
        return AsyncResult(task_id, app=self, **kwargs)

    def GroupResult(self, group_id: str | None = None, results: Any = None, **kwargs: Any) -> Any:
        """Return a group's result handle; ``GroupResult.restore`` reads a saved one."""
        from celeriac.result import GroupResult

        return GroupResult(group_id, results, app=self, **kwargs)

    # ---- connections -------------------------------------------------------------------

    @property
    def broker_url(self) -> str:
        """The broker URL in force: the setting, the environment, or the embedded SQLite file.

        The embedded file lies beside the module that created the app (``store_location``),
        so a worker and its clients agree on it from any working directory.
        """
        return (
            self.conf.broker_url
            or _from_environment(BROKER_ENVIRONMENT)
            or self.embedded_store_url()
        )

    def embedded_store_url(self) -> str:
        """The URL of the SQLite file used when no broker URL is configured."""
        if self._embedded_url is None:
            self._embedded_url = store_location.default_sqlite_url(self.main, self._source_file)
        return self._embedded_url

    @property
    def result_backend_url(self) -> str | None:
        """The result store URL: the setting, the environment, or one beside an embedded broker."""
        url = self.conf.result_backend or _from_environment(BACKEND_ENVIRONMENT)
        if url:
            return str(url)
        broker = self.broker_url
        if broker.startswith(("sqlite://", "memory://")):
            return broker
        return None

    @property
    def transport(self) -> Transport:
        """The broker connection, made on first use."""
        if self._transport is None:
            with self._lock:
                if self._transport is None:
                    from celeriac.transports import connect

                    self._transport = connect(self.broker_url, **self._transport_options)
        return self._transport

    @property
    def backend(self) -> ResultBackend:
        """The result store, made on first use."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = self._create_backend()
        return self._backend

    def _create_backend(self) -> ResultBackend:
        url = self.result_backend_url
        if url is None:
            from celeriac.backends.disabled import DisabledBackend

            return DisabledBackend()
        from celeriac.backends import from_url

        accept = self.conf.result_accept_content or self.conf.accept_content
        options = dict(self.conf.result_backend_transport_options)
        if url.partition("://")[0] == "rpc":
            # Results travel as messages through the broker, to this client's queue.
            options.update(
                transport=self.transport, oid=self.oid, persistent=self.conf.result_persistent
            )
        return from_url(
            url,
            serializer=self.conf.result_serializer,
            accept=accept,
            expires=self.conf.result_expires,
            **options,
        )

    def connection_for_write(self, url: str | None = None, **options: Any) -> Connection:
        """A new connection for publishing: ``url``, else ``broker_write_url``, else the broker.

        The caller closes it (``with app.connection_for_write() as conn: ...``).
        """
        return self._connection(url or self.conf.broker_write_url, **options)

    @property
    def _transport_options(self) -> dict[str, Any]:
        """``broker_transport_options`` over what Celery's settings say of queues and URLs.

        ``task_queue_max_priority`` and ``task_default_queue_type`` become the RabbitMQ
        transport's ``max_priority`` and ``queue_type``, ``broker_connection_timeout`` and
        ``broker_failover_strategy`` its ``connect_timeout`` and ``failover_strategy``
        (``connect_timeout`` is Redis's too), unless the options name them; transports
        ignore the ones they have no use for.
        """
        conf = self.conf
        defaults = {
            "max_priority": conf.task_queue_max_priority,
            "queue_type": conf.task_default_queue_type,
            "connect_timeout": conf.broker_connection_timeout,
            "failover_strategy": conf.broker_failover_strategy,
        }
        present = {name: value for name, value in defaults.items() if value is not None}
        return {**present, **conf.broker_transport_options}

    def connection_for_read(self, url: str | None = None, **options: Any) -> Connection:
        """A new connection for consuming: ``url``, else ``broker_read_url``, else the broker."""
        return self._connection(url or self.conf.broker_read_url, **options)

    def connection(self, hostname: str | None = None, **options: Any) -> Connection:
        """A new connection to ``hostname`` (a broker URL) or to the app's broker."""
        return self._connection(hostname, **options)

    broker_connection = connection

    def _connection(self, url: str | None, **options: Any) -> Connection:
        options.setdefault("transport_options", self._transport_options)
        return Connection(url or self.broker_url, bindings=self._bindings, **options)

    def _bindings(self, exchange: str, routing_key: str) -> list[str]:
        return bound_queues(self.amqp.queues.values(), exchange, routing_key)

    @property
    def pool(self) -> ConnectionPool:
        """Connections lent over the app's transport, ``broker_pool_limit`` at a time."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ConnectionPool(
                        self._pooled_connection, self.conf.broker_pool_limit
                    )
        return self._pool

    def _pooled_connection(self, pool: ConnectionPool) -> Connection:
        return Connection(
            self.broker_url,
            transport=self.transport,
            bindings=self._bindings,
            pool=pool,
            transport_options=self._transport_options,
        )

    @property
    def producer_pool(self) -> ProducerPool:
        """Producers lent on the app's pooled connections."""
        if self._producer_pool is None:
            connections = self.pool
            with self._lock:
                if self._producer_pool is None:
                    self._producer_pool = ProducerPool(
                        connections,
                        serializer=self.conf.task_serializer,
                        compression=self.conf.task_compression,
                    )
        return self._producer_pool

    @contextlib.contextmanager
    def connection_or_acquire(
        self, connection: Connection | None = None, pool: bool = True, **options: Any
    ) -> Iterator[Connection]:
        """Use ``connection`` if given, else borrow one from the pool (or open a new one)."""
        if connection is not None:
            yield connection
            return
        borrowed = self.pool.acquire(block=True) if pool else self.connection(**options)
        try:
            yield borrowed
        finally:
            borrowed.release()

    @contextlib.contextmanager
    def producer_or_acquire(self, producer: Producer | None = None) -> Iterator[Producer]:
        """Use ``producer`` if given, else borrow one from ``producer_pool`` for the block."""
        if producer is not None:
            yield producer
            return
        with self.producer_pool.acquire(block=True) as borrowed:
            yield borrowed

    def store_meta(self, meta: Meta, *, reply_to: str | None = None) -> None:
        """Store a result-meta dict in the result backend.

        ``reply_to`` is the task message's: the ``rpc://`` backend sends the meta there
        instead of storing it. With ``result_backend_always_retry`` (on by default) an
        unreachable store is retried until it is back, so an outcome is not lost to a
        blip of the store.
        """
        backend = self.backend
        task_id = str(meta["task_id"])
        conf = self.conf
        replies = replies_by_message(backend)

        def store() -> None:
            if replies is not None:
                replies.store_reply(task_id, meta, reply_to)
            else:
                backend.store(task_id, meta)

        if not conf.result_backend_always_retry:
            store()
            return
        retry_while_unavailable(
            store,
            max_retries=conf.result_backend_max_retries,
            base_sleep_ms=conf.result_backend_base_sleep_between_retries_ms,
            max_sleep_ms=conf.result_backend_max_sleep_between_retries_ms,
        )

    def prepare_replies(self, reply_to: str | None, ignore_result: bool | None) -> None:
        """Before a task is sent: with ``rpc://``, make sure this client reads its reply
        queue, so no result sent back is dropped (RabbitMQ drops what reaches no queue).

        Nothing to do for a task whose results go to another client's queue (a retry keeps
        its caller's ``reply_to``) or are ignored.
        """
        if reply_to is not None or ignore_result:
            return
        backend = self._backend
        if backend is None:
            url = self.result_backend_url
            if not url or not url.startswith("rpc:"):
                return
            backend = self.backend
        replies = replies_by_message(backend)
        if replies is not None:
            replies.ensure_reply_queue()

    @property
    def origin(self) -> str:
        """This process's sender name, ``gen<pid>@<host>``, recomputed after a fork."""
        pid = os.getpid()
        if self._origin[0] != pid:
            self._origin = (pid, f"gen{pid}@{socket.gethostname()}")
        return self._origin[1]

    def close(self) -> None:
        """Close the broker and result-store connections."""
        with self._lock:
            transport, backend = self._transport, self._backend
            self._transport = self._backend = None
            self._pool = self._producer_pool = None
        if transport is not None:
            transport.close()
        if backend is not None:
            backend.close()

    def set_current(self) -> None:
        """Make this app the current app."""
        current.set_current_app(self)

    def set_default(self) -> None:
        """Make this app the default app (same as current in celeriac)."""
        current.set_current_app(self)

    def __enter__(self) -> Celeriac:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Celeriac {self.main or '__main__'} at {id(self):#x}>"


Celery = Celeriac

"""Task: the base class of every task, with seed 004's methods and handlers.

``@app.task`` makes an *instance* of the base class (``Task`` or the ``base=`` given)
whose ``run`` is the decorated function; no class is created per task. Options left
as None are read from the app's settings at the moment they are used, so settings
changed after the decorator ran (``celeryd_init`` handlers do this) still apply.
"""

from __future__ import annotations

import contextvars
import inspect
import types
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypeVar

from celeriac import states
from celeriac.annotations import annotate
from celeriac.canvas.signature import Signature, signature
from celeriac.context import Context
from celeriac.current import get_current_app, get_current_task
from celeriac.exceptions import (
    Ignore,
    ImproperlyConfigured,
    MaxRetriesExceededError,
    OperationalError,
    Reject,
    Retry,
)
from celeriac.result import AsyncResult, EagerResult

if TYPE_CHECKING:
    from celeriac.app import Celeriac

P = ParamSpec("P")
R = TypeVar("R")

# Task attribute -> setting read when the attribute is None.
FROM_CONFIG: dict[str, str] = {
    "serializer": "task_serializer",
    "rate_limit": "task_default_rate_limit",
    "priority": "task_default_priority",
    "track_started": "task_track_started",
    "acks_late": "task_acks_late",
    "acks_on_failure_or_timeout": "task_acks_on_failure_or_timeout",
    "reject_on_worker_lost": "task_reject_on_worker_lost",
    "ignore_result": "task_ignore_result",
    "store_eager_result": "task_store_eager_result",
    "store_errors_even_if_ignored": "task_store_errors_even_if_ignored",
    "time_limit": "task_time_limit",
    "soft_time_limit": "task_soft_time_limit",
}

# Task attributes that become apply_async options unless the call gives its own.
EXEC_OPTIONS = (
    "queue",
    "routing_key",
    "exchange",
    "priority",
    "expires",
    "serializer",
    "delivery_mode",
    "compression",
    "time_limit",
    "soft_time_limit",
)


class Task(Generic[P, R]):
    """Task base class: call ``delay``/``apply_async`` to run ``run`` on a worker."""

    name: str = ""
    typing: bool = True
    max_retries: int | None = 3
    default_retry_delay: float = 180
    rate_limit: str | None = None
    ignore_result: bool | None = None
    trail: bool = True
    send_events: bool = True
    store_errors_even_if_ignored: bool | None = None
    store_eager_result: bool | None = None
    serializer: str | None = None
    compression: str | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    acks_late: bool | None = None
    acks_on_failure_or_timeout: bool | None = None
    reject_on_worker_lost: bool | None = None
    track_started: bool | None = None
    priority: int | None = None
    expires: float | datetime | None = None
    queue: str | None = None
    routing_key: str | None = None
    exchange: str | None = None
    delivery_mode: int | None = None
    resultrepr_maxsize: int = 1024
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: ClassVar[dict[str, Any]] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    throws: tuple[type[BaseException], ...] = ()
    shadow_name_fun: Callable[..., str | None] | None = None

    MaxRetriesExceededError = MaxRetriesExceededError
    OperationalError = OperationalError

    _app: Celeriac | None = None
    # The ``task_annotations`` value last applied to this task.
    _annotated_from: Any = None
    _run_signature_cache: tuple[object, inspect.Signature | None] | None = None

    def __init__(self) -> None:
        self._requests: contextvars.ContextVar[tuple[Context, ...]] = contextvars.ContextVar(
            f"celeriac_request_{id(self)}", default=()
        )

    # ---- binding -------------------------------------------------------------------

    @classmethod
    def on_bound(cls, app: Celeriac) -> None:
        """Run when a task of this class is bound to an app; override to add set-up."""

    def bind(self, app: Celeriac) -> Task[P, R]:
        """Attach this task to ``app``."""
        self._app = app
        type(self).on_bound(app)
        return self

    def annotate(self) -> None:
        """Apply the app's ``task_annotations`` to this task, once per value of the setting.

        Called when the task is first sent or run, and by the worker at start, so the
        setting may be given after the task is defined; a later ``control.rate_limit``
        is not undone.
        """
        annotations = self.app.conf.task_annotations
        if annotations is not self._annotated_from:
            self._annotated_from = annotations
            annotate(self, annotations)

    @property
    def app(self) -> Celeriac:
        """The app this task belongs to (the current app if it was never bound)."""
        return self._app if self._app is not None else get_current_app()

    @app.setter
    def app(self, app: Celeriac) -> None:
        self._app = app

    @property
    def backend(self) -> Any:
        """The result backend of the app."""
        return self.app.backend

    def option(self, attribute: str) -> Any:
        """Return a task option, falling back to its setting when unset on the task."""
        value = getattr(self, attribute)
        if value is None and attribute in FROM_CONFIG:
            return self.app.conf[FROM_CONFIG[attribute]]
        return value

    @classmethod
    def add_around(
        cls, attr: str, around: Callable[[Callable[..., Any]], Callable[..., Any]]
    ) -> None:
        """Wrap the method ``attr`` of this class with ``around(original)``."""
        original = getattr(cls, attr)
        original = getattr(original, "__wrapped__", original)
        wrapped = around(original)
        wrapped.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(cls, attr, wrapped)

    # ---- running -------------------------------------------------------------------

    def run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The body of the task; ``@app.task`` sets it to the decorated function."""
        raise ImproperlyConfigured(f"task {self.name!r} defines no run() method")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        stack = self._requests.get()
        if stack and stack[-1].get("_protected"):
            # The worker pushed this request and calls us: don't hide it behind a new one.
            stack[-1]._protected = False
            return self.run(*args, **kwargs)
        self.push_request(args=args, kwargs=kwargs)
        try:
            return self.run(*args, **kwargs)
        finally:
            self.pop_request()

    def push_request(self, *args: Any, **kwargs: Any) -> None:
        """Make a new request current for this task."""
        self._requests.set((*self._requests.get(), Context(*args, **kwargs)))

    def pop_request(self) -> None:
        """Drop the current request."""
        self._requests.set(self._requests.get()[:-1])

    @property
    def request(self) -> Context:
        """The request being executed: id, args, retries, delivery_info, ..."""
        stack = self._requests.get()
        return stack[-1] if stack else Context()

    @property
    def request_stack(self) -> tuple[Context, ...]:
        """Every request pushed for this task in this thread, oldest first."""
        return self._requests.get()

    def before_start(self, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Run by the worker just before the task starts."""

    def on_success(
        self, retval: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        """Run by the worker after the task returned successfully."""

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Run by the worker when the task is to be retried."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Run by the worker when the task failed."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Run by the worker after the task returned, whatever the outcome."""

    # ---- calling -------------------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task with these arguments; ``apply_async`` without options."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Send a message to run the task on a worker; return its AsyncResult.

        Options are seed 004's: countdown, eta, expires, connection, retry, retry_policy,
        queue, exchange, routing_key, priority, serializer, compression, link,
        link_error, producer, add_to_parent, headers, ignore_result, time_limit,
        soft_time_limit, and the publish options of ``Producer.publish``.
        """
        self.annotate()
        if self.typing:
            self.check_arguments(args or (), kwargs or {})
        shadow = shadow or self.shadow_name(args, kwargs, options)
        for attribute in EXEC_OPTIONS:
            if options.get(attribute) is None:
                value = self.option(attribute)
                if value is not None:
                    options[attribute] = value
        if options.get("ignore_result") is None:
            options["ignore_result"] = self.option("ignore_result")
        app = self.app
        if app.conf.task_always_eager:
            options.pop("connection", None)
            return self.apply(
                args,
                kwargs,
                task_id=task_id or str(uuid.uuid4()),
                link=link,
                link_error=link_error,
                **options,
            )
        if "publisher" in options:
            producer = producer or options.pop("publisher")
        return app.send_task(
            self.name,
            args,
            kwargs,
            task_id=task_id,
            producer=producer,
            link=link,
            link_error=link_error,
            shadow=shadow,
            task_type=self,
            **options,
        )

    def shadow_name(
        self,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> str | None:
        """Return a display name for logs and monitors, or None to use the task's name."""
        if self.shadow_name_fun is not None:
            return self.shadow_name_fun(self, args, kwargs, options)
        return None

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError now if the arguments do not fit ``run``, as the call would."""
        run_signature = self._run_signature()
        if run_signature is None:
            return
        try:
            run_signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}() {exc}") from None

    def _run_signature(self) -> inspect.Signature | None:
        """The signature of ``run`` (None if it has none), worked out once per ``run`` function.

        A bound method's signature depends only on its function, which is the cache key,
        so that each call does not inspect ``run`` again.
        """
        run = self.run
        key = getattr(run, "__func__", run)
        cached = self._run_signature_cache
        if cached is not None and cached[0] is key:
            return cached[1]
        try:
            run_signature: inspect.Signature | None = inspect.signature(run)
        except (TypeError, ValueError):
            run_signature = None
        self._run_signature_cache = (key, run_signature)
        return run_signature

    def signature_from_request(
        self,
        request: Context | None = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        **extra_options: Any,
    ) -> Signature:
        """Build a signature that re-sends the request (used by ``retry``)."""
        request = self.request if request is None else request
        args = request.args if args is None else args
        kwargs = request.kwargs if kwargs is None else kwargs
        delivery_info = request.delivery_info or {}
        priority = delivery_info.get("priority")
        if priority is not None:
            extra_options.setdefault("priority", priority)
        limit_hard, limit_soft = request.timelimit or (None, None)
        options: dict[str, Any] = {
            "task_id": request.id,
            "link": request.callbacks,
            "link_error": request.errbacks,
            "group_id": request.group,
            "group_index": request.group_index,
            "chord": request.chord,
            "chain": request.chain,
            "root_id": request.root_id,
            "parent_id": request.parent_id,
            "soft_time_limit": limit_soft,
            "time_limit": limit_hard,
            "reply_to": request.reply_to,
            "headers": request.headers,
            "shadow": request.shadow,
            "stamped_headers": request.stamped_headers,
            "stamps": request.stamps,
        }
        options.update({"queue": queue} if queue else delivery_info_route(delivery_info))
        return self.signature(args, kwargs, options, type=self, **extra_options)

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Send the task again to run later, and raise ``Retry`` to tell the worker.

        Past ``max_retries`` this raises ``exc`` if given, else MaxRetriesExceededError.
        """
        request = self.request
        retries = request.retries + 1
        limit = self.max_retries if max_retries is None else max_retries
        if request.called_directly:
            raise exc or Retry("Task can be retried", None)
        if not eta and countdown is None:
            countdown = self.default_retry_delay
        if limit is not None and retries > limit:
            if exc is not None:
                raise exc
            raise self.MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] "
                f"args:{request.args} kwargs:{request.kwargs}",
                task_args=request.args,
                task_kwargs=request.kwargs,
            )
        retry_signature = self.signature_from_request(
            request, args, kwargs, countdown=countdown, eta=eta, retries=retries, **options
        )
        outcome = Retry(
            exc=exc, when=eta or countdown, is_eager=request.is_eager, sig=retry_signature
        )
        if request.is_eager:
            outcome.eager_result = retry_signature.apply()  # type: ignore[attr-defined]
        else:
            try:
                retry_signature.apply_async()
            except Exception as error:
                raise Reject(error, requeue=False) from error
        if throw:
            raise outcome
        return outcome

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        link: Any = None,
        link_error: Any = None,
        task_id: str | None = None,
        retries: int | None = None,
        throw: bool | None = None,
        logfile: Any = None,
        loglevel: Any = None,
        headers: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task here and now, blocking, and return an EagerResult."""
        from celeriac.execution import apply_eagerly

        self.annotate()
        return apply_eagerly(
            self,
            list(args or ()),
            dict(kwargs or {}),
            task_id=task_id or str(uuid.uuid4()),
            link=link,
            link_error=link_error,
            retries=retries or 0,
            throw=self.app.conf.task_eager_propagates if throw is None else throw,
            headers=headers,
            logfile=logfile,
            loglevel=loglevel,
            **options,
        )

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult[R]:
        """Return the AsyncResult of a task id, for this task."""
        return AsyncResult(task_id, app=self.app, task_name=self.name, **kwargs)

    # ---- signatures ----------------------------------------------------------------

    def signature(self, args: Any = None, *starargs: Any, **starkwargs: Any) -> Signature:
        """Return a signature of this task: ``signature(args, kwargs, options, ...)``."""
        starkwargs.setdefault("app", self.app)
        return signature(self, args, *starargs, **starkwargs)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """Shortcut for ``signature(args, kwargs)``."""
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """Shortcut for an immutable signature: the parent's result is not prepended."""
        return self.signature(args, kwargs, immutable=True)

    def map(self, it: Iterable[Any]) -> Signature:
        """A signature calling this task with each item of ``it``, in one message."""
        from celeriac.canvas.chunks import xmap

        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Sequence[Any]]) -> Signature:
        """A signature calling this task with each item of ``it`` as its arguments."""
        from celeriac.canvas.chunks import xstarmap

        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Iterable[Sequence[Any]], n: int) -> Signature:
        """A signature running ``starmap`` over ``it`` in parts of ``n``, as a group."""
        from celeriac.canvas.chunks import chunks

        return chunks(self.s(), it, n, app=self.app)

    # ---- workflows from inside a task -----------------------------------------------

    def replace(self, sig: Signature) -> Any:
        """Replace the running task by ``sig``, which takes over its id and place.

        The new signature inherits the task's id, callbacks, errbacks, chord membership
        and the rest of its chain; a group becomes one result (a list) through
        ``celery.accumulate``. On a worker it is sent and ``Ignore`` raised, so nothing is
        stored for this run; in eager mode it runs here and its value is returned.
        """
        from celeriac.canvas.chain import chain
        from celeriac.canvas.group import group

        request = self.request
        if isinstance(sig, chain) and not sig.tasks:
            raise ImproperlyConfigured("Cannot replace with an empty chain")
        if isinstance(sig, group):
            sig = sig | self.app.tasks["celery.accumulate"].s(index=0)
        for callback in request.callbacks or ():
            sig.link(callback)
        for errback in request.errbacks or ():
            sig.link_error(errback)
        sig.freeze(request.id)
        nesting = (request.replaced_task_nesting or 0) + 1
        membership = {
            "chord": request.chord,
            "group_id": request.group,
            "group_index": request.group_index,
            "root_id": request.root_id,
        }
        sig.set(
            replaced_task_nesting=nesting,
            **{key: value for key, value in membership.items() if value is not None},
        )
        for hop in reversed(request.chain or ()):
            sig = sig | signature(hop, app=self.app).set(replaced_task_nesting=nesting)
        return self.on_replace(sig)

    def on_replace(self, sig: Signature) -> Any:
        """Run or send the replacing signature; override to change how (seed 004)."""
        if self.request.is_eager:
            return sig.apply().get(disable_sync_subtasks=False)
        sig.delay()
        raise Ignore("Replaced by new task")

    def add_to_chord(self, sig: Signature, lazy: bool = False) -> Any:
        """Add ``sig`` to the chord the running task belongs to; the body waits for it too.

        Returns its AsyncResult, or with ``lazy`` the signature to send yourself.
        """
        request = self.request
        if not request.chord or request.group is None:
            raise ValueError("Current task is not member of any chord")
        sig.set(
            group_id=request.group,
            group_index=request.group_index,
            chord=request.chord,
            root_id=request.root_id,
        )
        sig.freeze()
        self.backend.add_to_chord(request.group, sig.chord_size)
        return sig if lazy else sig.delay()

    # ---- talking from inside a task -------------------------------------------------

    def send_event(
        self,
        type_: str,
        retry: bool = True,
        retry_policy: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Send a monitoring event from the running task (seed 004), e.g. for Flower."""
        request = self.request
        fields.setdefault("uuid", request.id)
        with self.app.events.default_dispatcher(hostname=request.hostname) as dispatcher:
            dispatcher.send(
                type_,
                retry=retry,
                retry_policy=retry_policy or self.app.conf.task_publish_retry_policy,
                **fields,
            )

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **kwargs: Any
    ) -> None:
        """Store a state (custom ones too) and meta for the task, e.g. progress."""
        from celeriac.protocol.result_meta import build_meta

        task_id = task_id or self.request.id
        if task_id is None:
            raise ValueError("update_state needs a task_id outside a running task")
        self.app.store_meta(
            build_meta(task_id, state or states.PENDING, meta, **kwargs),
            reply_to=self.request.reply_to,
        )

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main}>"


def delivery_info_route(delivery_info: Mapping[str, Any]) -> dict[str, Any]:
    """Route a re-sent message where the original came from."""
    route: dict[str, Any] = {}
    if delivery_info.get("exchange") is not None:
        route["exchange"] = delivery_info["exchange"]
    if delivery_info.get("routing_key") is not None:
        route["routing_key"] = delivery_info["routing_key"]
        route["queue"] = delivery_info.get("queue") or delivery_info["routing_key"]
    return route


def make_task(
    app: Celeriac,
    fun: Callable[..., Any],
    *,
    name: str | None = None,
    base: type[Task[Any, Any]] | None = None,
    bind: bool = False,
    shadow_name: Callable[..., str | None] | None = None,
    **options: Any,
) -> Task[Any, Any]:
    """Build the task instance ``@app.task`` returns for ``fun``."""
    task_class = base or app.Task
    task = task_class()
    task.name = name or app.gen_task_name(fun.__name__, fun.__module__)
    task.run = types.MethodType(fun, task) if bind else fun  # type: ignore[method-assign]
    if shadow_name is not None:
        task.shadow_name_fun = shadow_name
    for key, value in options.items():
        if callable(value) and key in HANDLERS:
            value = types.MethodType(value, task)
        setattr(task, key, value)
    task.__doc__ = fun.__doc__
    task.__module__ = fun.__module__
    task.__name__ = fun.__name__  # type: ignore[attr-defined]
    task.__qualname__ = fun.__qualname__  # type: ignore[attr-defined]
    task.__wrapped__ = fun  # type: ignore[attr-defined]
    if task.autoretry_for:
        from celeriac.retries import wrap_autoretry

        wrap_autoretry(task)
    return task.bind(app)


# Options that name a method; given to the decorator, they act as methods of the task.
HANDLERS = frozenset({"on_success", "on_failure", "on_retry", "after_return", "before_start"})


def current_request_options() -> dict[str, Any]:
    """Return parent_id/root_id to give a message sent from inside a running task."""
    task = get_current_task()
    if task is None:
        return {}
    request = task.request
    if request.id is None or (request.called_directly and not request.is_eager):
        return {}
    return {"parent_id": request.id, "root_id": request.root_id or request.id}


__all__ = ["Task", "make_task", "states"]

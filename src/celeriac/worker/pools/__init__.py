"""Execution pools by name, and the helpers every pool uses to run a job (edge layer).

``create_pool`` builds the pool a worker asks for (``-P solo|threads|prefork|gevent``): ``POOLS``
maps each name to a small function that imports its module only when that pool is chosen.
The helpers below are shared by every pool, which is why they live here. Every pool calls
``on_done`` exactly once for each job it was given, even a job it never ran because it was
stopped first (``not_run_outcome``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from celeriac.exceptions import ImproperlyConfigured, WorkerLostError
from celeriac.worker.pools.base import ChildHooks, DoneCallback, Job, JobOutcome, JobTarget, Pool

logger = logging.getLogger(__name__)

NO_HOOKS = ChildHooks()


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """The settings a pool is built with; each pool reads the ones that apply to it."""

    concurrency: int
    hooks: ChildHooks = NO_HOOKS
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    soft_time_limit: float | None = None
    time_limit: float | None = None
    proc_alive_timeout: float = 4.0


PoolBuilder = Callable[[JobTarget, PoolOptions], Pool]


def _build_solo(target: JobTarget, options: PoolOptions) -> Pool:
    from celeriac.worker.pools.solo import SoloPool

    return SoloPool(target, soft_time_limit=options.soft_time_limit, time_limit=options.time_limit)


def _build_threads(target: JobTarget, options: PoolOptions) -> Pool:
    from celeriac.worker.pools.threads import ThreadPool

    return ThreadPool(
        target,
        options.concurrency,
        soft_time_limit=options.soft_time_limit,
        time_limit=options.time_limit,
    )


def _build_prefork(target: JobTarget, options: PoolOptions) -> Pool:
    from celeriac.worker.pools.prefork import PreforkPool

    return PreforkPool(
        target,
        options.concurrency,
        hooks=options.hooks,
        max_tasks_per_child=options.max_tasks_per_child,
        max_memory_per_child=options.max_memory_per_child,
        soft_time_limit=options.soft_time_limit,
        time_limit=options.time_limit,
        proc_alive_timeout=options.proc_alive_timeout,
    )


def _build_gevent(target: JobTarget, options: PoolOptions) -> Pool:
    try:
        from celeriac.worker.pools.gevent import GeventPool
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"The gevent pool needs gevent: pip install 'celeriac[gevent]' ({exc})"
        ) from exc

    return GeventPool(
        target,
        options.concurrency,
        soft_time_limit=options.soft_time_limit,
        time_limit=options.time_limit,
    )


POOLS: dict[str, PoolBuilder] = {
    "solo": _build_solo,
    "threads": _build_threads,
    "prefork": _build_prefork,
    "gevent": _build_gevent,
}


def create_pool(
    name: str,
    target: JobTarget,
    concurrency: int,
    *,
    hooks: ChildHooks = NO_HOOKS,
    max_tasks_per_child: int | None = None,
    max_memory_per_child: int | None = None,
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
    proc_alive_timeout: float = 4.0,
) -> Pool:
    """Build the pool called ``name``, not yet started.

    ``max_memory_per_child`` is in KiB of resident memory, as Celery's
    ``worker_max_memory_per_child``; ``soft_time_limit`` and ``time_limit`` apply to jobs
    that carry none of their own; ``proc_alive_timeout`` is how long a new child process
    may take to run its start hook (Celery's ``worker_proc_alive_timeout``).

    Raises:
        ImproperlyConfigured: the name is unknown or the concurrency is below one.
    """
    build = POOLS.get(name)
    if build is None:
        known = ", ".join(sorted(POOLS))
        raise ImproperlyConfigured(f"Unknown pool {name!r}: the known pools are {known}")
    if concurrency < 1:
        raise ImproperlyConfigured(f"Pool concurrency must be at least 1, not {concurrency}")
    options = PoolOptions(
        concurrency=concurrency,
        hooks=hooks,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
        soft_time_limit=soft_time_limit,
        time_limit=time_limit,
        proc_alive_timeout=proc_alive_timeout,
    )
    return build(target, options)


def run_job(target: JobTarget, job: Job) -> JobOutcome:
    """Call ``target``; an exception escaping it becomes a FAILURE outcome so the slot lives on."""
    started = time.monotonic()
    try:
        return target(job)
    except Exception as exc:  # the target handles task errors itself; this is the last guard
        logger.exception("Pool target raised for task %s[%s]", job.task_name, job.task_id)
        return JobOutcome(job.task_id, "FAILURE", runtime=time.monotonic() - started, exception=exc)


def not_run_outcome(job: Job) -> JobOutcome:
    """Say that a stopping pool did not run ``job``, so its message goes back to the broker."""
    return JobOutcome(job.task_id, "REJECTED", requeue=True, info={"reason": "pool stopped"})


def cut_off_outcome(job: Job) -> JobOutcome:
    """Say that a cold shutdown abandoned ``job`` while it ran (a thread cannot be killed)."""
    return JobOutcome(
        job.task_id,
        "FAILURE",
        lost=True,
        exception=WorkerLostError("the job was cut off by a cold shutdown"),
    )


def call_on_done(on_done: DoneCallback, outcome: JobOutcome) -> None:
    """Report ``outcome``; a failing callback is logged so that the slot keeps serving."""
    try:
        on_done(outcome)
    except Exception:  # the worker's callback must not take a pool slot down with it
        logger.exception("Reporting the outcome of task %s failed", outcome.task_id)


class TimeLimitWarning:
    """Log once that a pool cannot enforce time limits, when the first job carrying one comes.

    Threads and inline jobs cannot be interrupted from outside; Celery's thread pool
    ignores time limits the same way.
    """

    def __init__(
        self, pool_name: str, soft_time_limit: float | None, time_limit: float | None
    ) -> None:
        self._pool_name = pool_name
        self._has_default_limits = bool(soft_time_limit or time_limit)
        self._has_warned = False

    def check(self, job: Job) -> None:
        """Warn if ``job`` would run under a time limit and no warning was given yet."""
        if self._has_warned:
            return
        if self._has_default_limits or job.soft_time_limit or job.time_limit:
            self._has_warned = True
            logger.warning(
                "The %s pool cannot enforce time limits: %s[%s] and later tasks run without them",
                self._pool_name,
                job.task_name,
                job.task_id,
            )


def describe_timeouts(soft_time_limit: float | None, time_limit: float | None) -> list[float]:
    """Give the ``timeouts`` entry of ``inspect stats``: [soft, hard], 0 when unset."""
    return [soft_time_limit or 0, time_limit or 0]

"""Gevent pool: run each job in a greenlet of the worker process (edge layer).

Green threads suit many I/O-bound tasks at once: ``-P gevent -c 500`` runs 500 tasks in
one process, each giving way whenever it waits on a socket or sleeps. The standard
library must be patched before anything opens a socket or starts a thread, which
``celeriac worker -P gevent`` does first thing (``celeriac.__main__``); this pool refuses
to run in a process that was not patched. It sends the green pool signals of Celery's
catalog (``eventlet_pool_started``, ``eventlet_pool_apply``,
``eventlet_pool_preshutdown``, ``eventlet_pool_postshutdown``) with itself as sender.

A job can be interrupted where it gives way: at its soft time limit SoftTimeLimitExceeded
is raised in the task; at its hard time limit, on ``terminate_job`` and at a cold stop the
job is cut short and reported lost, as the prefork pool reports a killed child. A task
that computes without giving way cannot be interrupted. Interruptions are delivered by
the hub only while the job is inside its target, so its outcome is reported once.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
import gevent.monkey

from celeriac import signals
from celeriac.exceptions import (
    ImproperlyConfigured,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from celeriac.worker.pools import call_on_done, describe_timeouts, not_run_outcome, run_job
from celeriac.worker.pools.base import DoneCallback, Job, JobOutcome, JobTarget

logger = logging.getLogger("celeriac.worker")


class _CutShort(BaseException):
    """Ends a job from outside; not an Exception, so neither the task nor the trace keeps it."""

    def __init__(self, state: str, exception: BaseException, **info: Any) -> None:
        super().__init__(state, exception)
        self.state = state
        self.exception = exception
        self.info = info


class _Phase(enum.Enum):
    WAITING = "waiting"  # spawned, not yet started by the hub
    RUNNING = "running"  # inside the target: interruptions are delivered
    FINISHED = "finished"  # out of the target: interruptions are dropped


@dataclass(eq=False, slots=True)
class _Running:
    """One job in its greenlet, with the timers that will interrupt it."""

    job: Job
    on_done: DoneCallback
    greenlet: gevent.Greenlet | None = None
    phase: _Phase = _Phase.WAITING
    cut_before_start: _CutShort | None = None
    timers: list[Any] = field(default_factory=list)


def require_patched_process() -> None:
    """Refuse to run green in a process whose sockets and threads would block the hub.

    Raises:
        ImproperlyConfigured: the process was not patched by gevent at its start.
    """
    if not (
        gevent.monkey.is_module_patched("socket") and gevent.monkey.is_module_patched("threading")
    ):
        raise ImproperlyConfigured(
            "The gevent pool needs the process patched at its start: give -P gevent on the "
            "command line (celeriac -A proj worker -P gevent), not only the worker_pool setting"
        )


class GeventPool:
    """Run up to ``limit`` jobs at once, each in a greenlet of its own.

    Jobs applied while ``limit`` greenlets run wait in a backlog, started as others end.
    ``on_done`` is called from the greenlet that ran the job. Every caller is a greenlet
    of the one patched thread and nothing here gives way mid-update, so no lock is needed.
    """

    def __init__(
        self,
        target: JobTarget,
        concurrency: int,
        *,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
    ) -> None:
        require_patched_process()
        self.limit = concurrency
        self._target = target
        self._soft_time_limit = soft_time_limit
        self._time_limit = time_limit
        self._hub = gevent.get_hub()
        self._running: set[_Running] = set()
        self._backlog: collections.deque[_Running] = collections.deque()
        self._idle = gevent.event.Event()
        self._idle.set()
        self._is_stopping = False
        self._is_cutting_short = False
        self._has_shut_down = False

    def start(self) -> None:
        """Start taking jobs; greenlets are made per job, so there is nothing to create."""
        signals.eventlet_pool_started.send(sender=self)

    def apply(self, job: Job, on_done: DoneCallback) -> None:
        """Start ``job`` in a new greenlet, or keep it for later if ``limit`` are running."""
        if self._is_stopping:
            call_on_done(on_done, not_run_outcome(job))
            return
        signals.eventlet_pool_apply.send(sender=self, target=self._target, args=(job,), kwargs={})
        self._idle.clear()
        self._backlog.append(_Running(job, on_done))
        self._start_from_backlog()

    def terminate_job(self, task_id: str, signum: int) -> bool:
        """Cut the running job with that id short; it is then reported revoked."""
        for running in self._running:
            if running.job.task_id == task_id and running.phase is not _Phase.FINISHED:
                cut = _CutShort("REVOKED", TaskRevokedError("terminated"), signum=signum)
                self._hub.loop.run_callback(self._interrupt, running, cut)
                return True
        return False

    def grow(self, n: int = 1) -> None:
        """Allow ``n`` more jobs at once; a stopping pool ignores this."""
        if self._is_stopping:
            return
        self.limit += n
        self._start_from_backlog()

    def shrink(self, n: int = 1) -> None:
        """Allow ``n`` fewer jobs at once; running jobs go on to their end.

        Raises:
            ValueError: the pool would be left without a slot.
        """
        if n >= self.limit:
            raise ValueError(f"Cannot shrink a pool of {self.limit} greenlets by {n}")
        self.limit -= n

    def stop(self, *, graceful: bool) -> None:
        """Stop taking jobs and wait for the greenlets.

        Graceful: running and waiting jobs finish. Not graceful: waiting jobs are given
        back unrun and running ones are cut short and reported lost. Called from the hub
        (an OS signal handler runs there), it only asks for this and returns; a later call
        from a greenlet waits.
        """
        if not self._is_stopping:
            self._is_stopping = True
            signals.eventlet_pool_preshutdown.send(sender=self)
        if not graceful and not self._is_cutting_short:
            self._is_cutting_short = True
            gevent.spawn(self._cut_everything_short)
        if gevent.getcurrent() is self._hub or self._is_own_greenlet():
            return
        self._idle.wait()
        if not self._has_shut_down:
            self._has_shut_down = True
            signals.eventlet_pool_postshutdown.send(sender=self)

    def info(self) -> dict[str, Any]:
        """Describe the pool for ``inspect stats``."""
        return {
            "implementation": "celeriac.worker.pools.gevent:GeventPool",
            "max-concurrency": self.limit,
            "processes": [os.getpid()],
            "max-tasks-per-child": "N/A",
            "timeouts": describe_timeouts(self._soft_time_limit, self._time_limit),
            "free-threads": max(self.limit - len(self._running), 0),
            "running-threads": len(self._running),
        }

    # ---- running jobs ----------------------------------------------------------------

    def _start_from_backlog(self) -> None:
        while self._backlog and len(self._running) < self.limit:
            running = self._backlog.popleft()
            self._running.add(running)
            running.greenlet = gevent.spawn(self._serve, running)

    def _serve(self, running: _Running) -> None:
        outcome = self._outcome(running)
        self._running.discard(running)
        call_on_done(running.on_done, outcome)
        self._start_from_backlog()
        if not self._running and not self._backlog:
            self._idle.set()

    def _outcome(self, running: _Running) -> JobOutcome:
        job = running.job
        started = time.monotonic()
        try:
            running.phase = _Phase.RUNNING
            if running.cut_before_start is not None:
                raise running.cut_before_start
            self._arm_time_limits(running)
            return run_job(self._target, job)
        except _CutShort as cut:
            return JobOutcome(
                job.task_id,
                cut.state,
                runtime=time.monotonic() - started,
                lost=True,
                exception=cut.exception,
                info=cut.info,
            )
        finally:
            running.phase = _Phase.FINISHED
            for timer in running.timers:
                timer.close()

    def _arm_time_limits(self, running: _Running) -> None:
        job = running.job
        soft_time_limit = job.soft_time_limit or self._soft_time_limit
        time_limit = job.time_limit or self._time_limit
        if soft_time_limit:
            self._call_after(soft_time_limit, running, self._interrupt, SoftTimeLimitExceeded())
        if time_limit:
            self._call_after(time_limit, running, self._exceed_time_limit, time_limit)

    def _call_after(self, seconds: float, running: _Running, callback: Any, argument: Any) -> None:
        """Have the hub call ``callback(running, argument)`` in ``seconds`` unless the job ends."""
        timer = self._hub.loop.timer(seconds)
        timer.start(callback, running, argument)
        running.timers.append(timer)

    def _exceed_time_limit(self, running: _Running, time_limit: float) -> None:
        if running.phase is _Phase.RUNNING:
            job = running.job
            logger.error(
                "Hard time limit (%ss) exceeded for %s[%s]", time_limit, job.task_name, job.task_id
            )
            self._interrupt(running, _CutShort("FAILURE", TimeLimitExceeded(time_limit)))

    def _interrupt(self, running: _Running, exc: BaseException) -> None:
        """Raise ``exc`` in the job's greenlet while it is in its target; run by the hub only,
        as switching into another greenlet must be."""
        if running.phase is _Phase.WAITING and isinstance(exc, _CutShort):
            running.cut_before_start = exc
        elif running.phase is _Phase.RUNNING and running.greenlet is not None:
            running.greenlet.throw(exc)

    def _cut_everything_short(self) -> None:
        """Give back the jobs not started and cut the running ones short (a cold stop)."""
        while self._backlog:
            running = self._backlog.popleft()
            call_on_done(running.on_done, not_run_outcome(running.job))
        for running in list(self._running):
            lost = WorkerLostError("Worker exited prematurely: cold shutdown.")
            self._hub.loop.run_callback(self._interrupt, running, _CutShort("FAILURE", lost))
        if not self._running:
            self._idle.set()

    def _is_own_greenlet(self) -> bool:
        current = gevent.getcurrent()
        return any(running.greenlet is current for running in self._running)

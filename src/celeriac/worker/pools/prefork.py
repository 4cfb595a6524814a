"""Prefork pool: run jobs in forked child processes (edge layer).

Each slot is a thread of the worker process that owns one child at a time and talks
to it through one duplex pipe: it sends a pickled ``Job``, waits for the pickled
``JobOutcome`` for at most the job's hard time limit, and replaces the child when it
dies, is killed, or retires itself (``max_tasks_per_child``, ``max_memory_per_child``).

Children are forked (the "fork" start method) so they inherit the app and the target,
as Celery users expect. Forks happen one at a time under ``_fork_lock``, the only lock
held while forking, and a child touches none of the parent's locks: it has only its
pipe, the target and the hooks. Children are daemonic, so, as in Celery, a task cannot
start ``multiprocessing`` children of its own.

The first half of this module runs in the child, the second half in the parent; both
sides of the pipe are kept in one module so that each message and its handling read
together. The child half is the place to cut if the module grows past its ~570 lines.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkProcess
from types import FrameType
from typing import Any, cast

from celeriac.exceptions import (
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from celeriac.worker.pools import (
    NO_HOOKS,
    call_on_done,
    describe_timeouts,
    not_run_outcome,
    run_job,
)
from celeriac.worker.pools.base import ChildHooks, DoneCallback, Job, JobOutcome, JobTarget

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_RESPAWN_DELAY = 1.0  # seconds between attempts while new children fail to start
_EXIT_TIMEOUT = 10.0  # seconds a child told to stop gets to run its exit hook


# ---- in the child ----


@dataclass(frozen=True, slots=True)
class _ChildSettings:
    """What a child needs to serve jobs; inherited through fork, never pickled."""

    target: JobTarget
    hooks: ChildHooks
    soft_time_limit: float | None
    max_tasks_per_child: int | None
    max_memory_per_child: int | None


@dataclass(frozen=True, slots=True)
class _Started:
    """The child's first message: ``error`` is the traceback of a failed start hook."""

    error: str | None


@dataclass(frozen=True, slots=True)
class _Report:
    """The child's answer to a job; ``is_exiting`` says it retires after this job."""

    outcome: JobOutcome
    is_exiting: bool


def _serve_jobs(
    connection: Connection,
    inherited: Sequence[Connection],
    parent_pid: int,
    settings: _ChildSettings,
) -> None:
    """Start the child, then run jobs until told to stop, retired, or orphaned."""
    _prepare_child(inherited, parent_pid)
    try:
        settings.hooks.on_start()
    except Exception:  # any failure of the user's worker_process_init handlers
        connection.send_bytes(pickle.dumps(_Started(traceback.format_exc())))
        sys.exit(1)
    connection.send_bytes(pickle.dumps(_Started(None)))
    jobs_served = 0
    while (job := _receive_job(connection)) is not None:
        outcome = _run_with_soft_time_limit(settings, job)
        jobs_served += 1
        is_exiting = _should_retire(settings, jobs_served)
        try:
            connection.send_bytes(_dump_report(outcome, is_exiting))
        except OSError:
            break
        if is_exiting:
            break
    try:
        settings.hooks.on_exit(os.getpid(), 0)
    except Exception:  # any failure of the user's worker_process_shutdown handlers
        logger.exception("The exit hook of child process %d failed", os.getpid())


def _prepare_child(inherited: Sequence[Connection], parent_pid: int) -> None:
    """Drop the parent's pipe ends, set the child's signals and tie its life to the parent's.

    Holding no copy of a parent end lets the child see end-of-file when the parent goes.
    """
    for connection in inherited:
        connection.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, _raise_soft_time_limit)
    if sys.platform.startswith("linux"):
        # Linux sends the signal when the thread that forked us ends: the slot thread,
        # which outlives its child unless the whole worker process is gone.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent_pid:
        os._exit(1)


def _raise_soft_time_limit(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded()


def _receive_job(connection: Connection) -> Job | None:
    """Wait for the next job; None when told to stop or when the parent is gone."""
    try:
        job: Job | None = pickle.loads(connection.recv_bytes())
    except (EOFError, OSError):
        return None
    return job


def _run_with_soft_time_limit(settings: _ChildSettings, job: Job) -> JobOutcome:
    """Run ``job`` with a one-shot SIGALRM timer that raises SoftTimeLimitExceeded in the task."""
    soft_time_limit = job.soft_time_limit or settings.soft_time_limit
    if not soft_time_limit:
        return run_job(settings.target, job)
    outcome: JobOutcome | None = None
    try:
        signal.setitimer(signal.ITIMER_REAL, soft_time_limit)
        outcome = run_job(settings.target, job)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except SoftTimeLimitExceeded as exc:
        # The timer fired after the task had returned, before it could be cleared.
        outcome = outcome or JobOutcome(job.task_id, "FAILURE", exception=exc)
    return outcome


def _should_retire(settings: _ChildSettings, jobs_served: int) -> bool:
    """Tell whether this child has served its quota of jobs or grown past its memory limit."""
    if settings.max_tasks_per_child and jobs_served >= settings.max_tasks_per_child:
        logger.info("Child process %d served %d tasks: replacing it", os.getpid(), jobs_served)
        return True
    limit = settings.max_memory_per_child
    if limit:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_kib = peak // 1024 if sys.platform == "darwin" else peak  # macOS counts bytes
        if peak_kib > limit:
            logger.warning(
                "Child process %d used %d KiB of memory, over the limit of %d KiB: replacing it",
                os.getpid(),
                peak_kib,
                limit,
            )
            return True
    return False


def _dump_report(outcome: JobOutcome, is_exiting: bool) -> bytes:
    """Pickle the report; an outcome that cannot travel is replaced by one that says why."""
    try:
        data = pickle.dumps(_Report(outcome, is_exiting))
        if outcome.exception is not None:
            # An exception whose __init__ wants other arguments fails only when unpickled.
            pickle.loads(data)
    except Exception as exc:  # whatever pickle raises: the parent must still get an answer
        reason = RuntimeError(f"The outcome of task {outcome.task_id} cannot be pickled: {exc!r}")
        replacement = JobOutcome(
            outcome.task_id, "FAILURE", runtime=outcome.runtime, exception=reason
        )
        data = pickle.dumps(_Report(replacement, is_exiting))
    return data


# ---- in the parent ----


@dataclass(eq=False, slots=True)
class _Child:
    """A child process and the parent's end of its pipe."""

    process: ForkProcess
    connection: Connection
    pid: int


class _Slot:
    """One execution slot: a parent thread feeding jobs to one child at a time.

    ``child``, ``running_task_id`` and ``terminate_signum`` are guarded by the pool's lock.
    """

    def __init__(self, number: int, serve: Callable[[_Slot], None]) -> None:
        self.child: _Child | None = None
        self.running_task_id: str | None = None
        self.terminate_signum: int | None = None
        self.is_started = threading.Event()
        self.thread = threading.Thread(
            target=serve, args=(self,), name=f"celeriac-prefork-slot-{number}", daemon=True
        )


_Item = tuple[int, Job, DoneCallback]


class PreforkPool:
    """Run up to ``limit`` jobs at once, each in a child process of its own.

    Soft time limits raise SoftTimeLimitExceeded inside the task; at the hard limit the
    child is killed and the job reported lost. A child that dies while running a job is
    reported as WorkerLostError and replaced. Jobs wait in one queue that idle slots take
    from; ``None`` in it tells one slot to end, which is how ``shrink`` and ``stop`` work.
    """

    def __init__(
        self,
        target: JobTarget,
        concurrency: int,
        *,
        hooks: ChildHooks = NO_HOOKS,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
        proc_alive_timeout: float = 4.0,
    ) -> None:
        self.limit = concurrency
        self._settings = _ChildSettings(
            target=target,
            hooks=hooks,
            soft_time_limit=soft_time_limit,
            max_tasks_per_child=max_tasks_per_child,
            max_memory_per_child=max_memory_per_child,
        )
        self._time_limit = time_limit
        self._proc_alive_timeout = proc_alive_timeout
        self._context = multiprocessing.get_context("fork")
        self._inbox: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._fork_lock = threading.Lock()
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._children: dict[int, _Child] = {}
        self._job_numbers = itertools.count(1)
        self._slot_numbers = itertools.count(1)
        self._child_numbers = itertools.count(1)
        self._stopping = threading.Event()
        self._is_killing = False

    def start(self) -> None:
        """Start ``limit`` slots, returning once each has tried to start its child."""
        self._add_slots(self.limit)

    def apply(self, job: Job, on_done: DoneCallback) -> None:
        """Queue ``job`` for the next idle slot; a stopped pool gives it back unrun."""
        if self._stopping.is_set():
            call_on_done(on_done, not_run_outcome(job))
            return
        self._inbox.put((next(self._job_numbers), job, on_done))

    def terminate_job(self, task_id: str, signum: int) -> bool:
        """Send ``signum`` to the child running ``task_id``; the job is then reported revoked."""
        with self._lock:
            for slot in self._slots:
                if slot.running_task_id == task_id and slot.child is not None:
                    slot.terminate_signum = signum
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.child.pid, signum)
                    return True
        return False

    def grow(self, n: int = 1) -> None:
        """Add ``n`` slots, each with a child of its own; a stopping pool ignores this."""
        with self._lock:
            if self._stopping.is_set():
                return
            self.limit += n
        self._add_slots(n)

    def shrink(self, n: int = 1) -> None:
        """Remove ``n`` slots, each once it is idle, and stop their children.

        Raises:
            ValueError: the pool would be left without a slot.
        """
        with self._lock:
            if n >= self.limit:
                raise ValueError(f"Cannot shrink a pool of {self.limit} processes by {n}")
            self.limit -= n
        for _ in range(n):
            self._inbox.put(None)

    def stop(self, *, graceful: bool) -> None:
        """Stop every child and slot, returning once all children are reaped.

        Graceful: running and queued jobs finish, then each child is told to stop and runs
        its exit hook. Not graceful: children are killed at once, running jobs are reported
        lost and queued ones not run. A non-graceful call may follow a graceful one that
        is still waiting, from another thread, to cut it short.
        """
        with self._fork_lock, self._lock:
            is_first_call = not self._stopping.is_set()
            self._stopping.set()
            self._is_killing = self._is_killing or not graceful
            if self._is_killing:
                for child in self._children.values():
                    child.process.kill()
            slots = list(self._slots)
        if is_first_call:
            for _ in slots:
                self._inbox.put(None)
        for slot in slots:
            if slot.thread is not threading.current_thread():
                slot.thread.join()

    def info(self) -> dict[str, Any]:
        """Describe the pool for ``inspect stats``."""
        with self._lock:
            pids = sorted(self._children)
        return {
            "implementation": "celeriac.worker.pools.prefork:PreforkPool",
            "max-concurrency": self.limit,
            "processes": pids,
            "max-tasks-per-child": self._settings.max_tasks_per_child or "N/A",
            "timeouts": describe_timeouts(self._settings.soft_time_limit, self._time_limit),
        }

    def _add_slots(self, n: int) -> None:
        slots = [_Slot(next(self._slot_numbers), self._serve) for _ in range(n)]
        with self._lock:
            self._slots.extend(slots)
        for slot in slots:
            slot.thread.start()
        for slot in slots:
            slot.is_started.wait()

    def _serve(self, slot: _Slot) -> None:
        """Run in the slot's thread: take jobs until told to end, then stop the child."""
        self._ensure_child(slot)
        slot.is_started.set()
        while (item := self._inbox.get()) is not None:
            number, job, on_done = item
            call_on_done(on_done, self._run(slot, number, job))
            self._ensure_child(slot)
        if slot.child is not None:
            with contextlib.suppress(OSError):
                slot.child.connection.send_bytes(pickle.dumps(None))
            self._discard_child(slot, grace=_EXIT_TIMEOUT)
        with self._lock:
            self._slots.remove(slot)

    def _ensure_child(self, slot: _Slot) -> _Child | None:
        """Give the slot a live child, forking until one starts; None once the pool stops."""
        while slot.child is None or not slot.child.process.is_alive():
            if slot.child is not None:
                exitcode = self._discard_child(slot, grace=0)
                if not self._stopping.is_set():
                    logger.warning(
                        "Idle child exited with %s: replacing it", _describe_exit(exitcode)
                    )
            child = self._spawn_child()
            slot.is_started.set()
            if child is not None:
                with self._lock:
                    slot.child = child
            elif self._stopping.wait(_RESPAWN_DELAY):
                return None
        return slot.child

    def _spawn_child(self) -> _Child | None:
        """Fork a child and wait for its start hook; None if the pool stops or the child fails."""
        self._settings.hooks.before_create()
        with self._fork_lock:
            if self._stopping.is_set():
                return None
            try:
                child = self._fork()
            except OSError:
                logger.exception("Could not start a child process")
                return None
        if self._has_started(child):
            return child
        self._end_child(child, grace=0)
        return None

    def _fork(self) -> _Child:
        """Fork a child with a pipe of its own; called with ``_fork_lock`` held."""
        parent_end, child_end = self._context.Pipe(duplex=True)
        with self._lock:
            inherited = [child.connection for child in self._children.values()]
        process = self._context.Process(
            target=_serve_jobs,
            args=(child_end, [*inherited, parent_end], os.getpid(), self._settings),
            name=f"ForkPoolWorker-{next(self._child_numbers)}",
            daemon=True,
        )
        try:
            process.start()
        except OSError:
            parent_end.close()
            raise
        finally:
            child_end.close()
        child = _Child(process, parent_end, cast(int, process.pid))
        with self._lock:
            self._children[child.pid] = child
        return child

    def _has_started(self, child: _Child) -> bool:
        """Wait for the child's start report, for at most ``proc_alive_timeout`` seconds."""
        timeout = self._proc_alive_timeout
        try:
            if not child.connection.poll(timeout):
                logger.error(
                    "Child process %d did not start within %s s: replacing it", child.pid, timeout
                )
                return False
            started: _Started = pickle.loads(child.connection.recv_bytes())
        except (EOFError, OSError):
            if not self._stopping.is_set():
                logger.error("Child process %d exited while starting: replacing it", child.pid)
            return False
        if started.error is not None:
            logger.error(
                "Child process %d failed to start, replacing it:\n%s", child.pid, started.error
            )
            return False
        return True

    def _run(self, slot: _Slot, number: int, job: Job) -> JobOutcome:
        """Run ``job`` on the slot's child, marking it as running so it can be terminated."""
        child = None if self._is_killing else self._ensure_child(slot)
        if child is None:
            return not_run_outcome(job)
        with self._lock:
            slot.running_task_id = job.task_id
            slot.terminate_signum = None
        try:
            return self._exchange(slot, child, number, job)
        finally:
            with self._lock:
                slot.running_task_id = None

    def _exchange(self, slot: _Slot, child: _Child, number: int, job: Job) -> JobOutcome:
        """Send ``job`` to the child and wait for its report, within the hard time limit."""
        try:
            data = pickle.dumps(job)
        except Exception as exc:  # whatever pickle raises for a payload it cannot handle
            reason = RuntimeError(f"Task {job.task_name}[{job.task_id}] cannot be pickled: {exc!r}")
            return JobOutcome(job.task_id, "FAILURE", exception=reason)
        time_limit = job.time_limit or self._time_limit
        started = time.monotonic()
        try:
            child.connection.send_bytes(data)
            if not child.connection.poll(time_limit):
                return self._kill_over_time(slot, job, time_limit, time.monotonic() - started)
            message = child.connection.recv_bytes()
        except (EOFError, OSError):
            return self._lost_outcome(slot, number, job, time.monotonic() - started)
        try:
            report: _Report = pickle.loads(message)
        except Exception as exc:  # whatever unpickling raises: the slot must go on serving
            self._discard_child(slot, grace=0)
            reason = RuntimeError(f"The outcome of task {job.task_id} cannot be read: {exc!r}")
            return JobOutcome(job.task_id, "FAILURE", exception=reason)
        if report.is_exiting:
            self._discard_child(slot, grace=_EXIT_TIMEOUT)
        elif slot.terminate_signum is not None:
            self._discard_child(slot, grace=0)
        return report.outcome

    def _kill_over_time(
        self, slot: _Slot, job: Job, time_limit: float | None, runtime: float
    ) -> JobOutcome:
        logger.error(
            "Hard time limit (%ss) exceeded for %s[%s]", time_limit, job.task_name, job.task_id
        )
        self._discard_child(slot, grace=0)
        return JobOutcome(
            job.task_id,
            "FAILURE",
            runtime=runtime,
            lost=True,
            exception=TimeLimitExceeded(time_limit),
        )

    def _lost_outcome(self, slot: _Slot, number: int, job: Job, runtime: float) -> JobOutcome:
        pid = slot.child.pid if slot.child is not None else None
        exitcode = self._discard_child(slot, grace=_EXIT_TIMEOUT)
        signum = slot.terminate_signum
        if signum is not None:
            return JobOutcome(
                job.task_id,
                "REVOKED",
                runtime=runtime,
                lost=True,
                exception=TaskRevokedError("terminated"),
                info={"signum": signum},
            )
        reason = _describe_exit(exitcode)
        if not self._is_killing:
            logger.error(
                "Child process %s exited with %s while running %s[%s]",
                pid,
                reason,
                job.task_name,
                job.task_id,
            )
        error = WorkerLostError(f"Worker exited prematurely: {reason} Job: {number}.")
        return JobOutcome(job.task_id, "FAILURE", runtime=runtime, lost=True, exception=error)

    def _discard_child(self, slot: _Slot, *, grace: float) -> int | None:
        """End the slot's child (see ``_end_child``) and leave the slot without one."""
        child = slot.child
        if child is None:
            return None
        with self._lock:
            slot.child = None
        return self._end_child(child, grace=grace)

    def _end_child(self, child: _Child, *, grace: float) -> int | None:
        """Give ``child`` ``grace`` seconds to exit, then kill it, reap it and forget it."""
        child.process.join(grace)
        if child.process.exitcode is None:
            child.process.kill()
            child.process.join()
        exitcode = child.process.exitcode
        with self._lock:
            del self._children[child.pid]
        child.connection.close()
        return exitcode


def _describe_exit(exitcode: int | None) -> str:
    """Word an exit code as Celery does: ``signal 9 (SIGKILL)`` or ``exitcode 1``."""
    if exitcode is None or exitcode >= 0:
        return f"exitcode {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = "unknown signal"
    return f"signal {-exitcode} ({name})"

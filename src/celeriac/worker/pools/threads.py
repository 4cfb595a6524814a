"""Thread pool: run jobs in a set of threads of the worker process (edge layer).

Threads suit I/O-bound tasks and platforms without fork. A thread cannot be killed,
so running jobs cannot be terminated and time limits are not enforced (a warning is
logged once, as Celery's thread pool ignores them too). A cold shutdown abandons the
running jobs instead: each is reported cut off at once, its thread's later outcome is
dropped, and the worker process exits without waiting for it (the threads are daemons).
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from typing import Any

from celeriac.worker.pools import (
    TimeLimitWarning,
    call_on_done,
    cut_off_outcome,
    describe_timeouts,
    not_run_outcome,
    run_job,
)
from celeriac.worker.pools.base import DoneCallback, Job, JobTarget

_Item = tuple[Job, DoneCallback]

# How often a graceful stop looks whether a cold shutdown cut it short, in seconds.
_JOIN_INTERVAL = 0.1


class ThreadPool:
    """Run up to ``limit`` jobs at once, each in one of ``limit`` threads.

    Jobs wait in a queue that idle threads take from; ``None`` in the queue tells one
    thread to end, which is how ``shrink`` and ``stop`` remove idle threads. ``on_done``
    is called from the thread that ran the job.
    """

    def __init__(
        self,
        target: JobTarget,
        concurrency: int,
        *,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
    ) -> None:
        self.limit = concurrency
        self._target = target
        self._soft_time_limit = soft_time_limit
        self._time_limit = time_limit
        self._time_limit_warning = TimeLimitWarning("threads", soft_time_limit, time_limit)
        self._inbox: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._thread_numbers = itertools.count(1)
        self._is_stopping = False
        self._is_dropping_jobs = False
        # The job each busy thread runs, by thread id; taken out by whoever reports it.
        self._running: dict[int, _Item] = {}
        self._cut_off = threading.Event()

    def start(self) -> None:
        """Start ``limit`` threads."""
        self._add_threads(self.limit)

    def apply(self, job: Job, on_done: DoneCallback) -> None:
        """Queue ``job`` for the next idle thread; a stopped pool gives it back unrun."""
        if self._is_stopping:
            call_on_done(on_done, not_run_outcome(job))
            return
        self._time_limit_warning.check(job)
        self._inbox.put((job, on_done))

    def terminate_job(self, task_id: str, signum: int) -> bool:
        """Return False: Python threads cannot be killed, so a running job runs to its end."""
        return False

    def grow(self, n: int = 1) -> None:
        """Start ``n`` more threads; a stopping pool ignores this."""
        with self._lock:
            if self._is_stopping:
                return
            self.limit += n
        self._add_threads(n)

    def shrink(self, n: int = 1) -> None:
        """End ``n`` threads, each once it is idle.

        Raises:
            ValueError: the pool would be left without a thread.
        """
        with self._lock:
            if n >= self.limit:
                raise ValueError(f"Cannot shrink a pool of {self.limit} threads by {n}")
            self.limit -= n
        for _ in range(n):
            self._inbox.put(None)

    def stop(self, *, graceful: bool) -> None:
        """Stop the threads.

        Graceful: wait until the running and queued jobs are done. Not graceful: report
        queued jobs as not run and running ones as cut off (``cut_off_outcome``), then
        return; those threads go on, but as daemons they do not keep the process alive,
        and what they report later is dropped. A non-graceful call cuts short a graceful
        one still waiting in another thread.
        """
        with self._lock:
            is_first_call = not self._is_stopping
            is_first_cut = not graceful and not self._is_dropping_jobs
            self._is_stopping = True
            self._is_dropping_jobs = self._is_dropping_jobs or not graceful
            threads = list(self._threads)
            abandoned = list(self._running.values()) if is_first_cut else []
            if is_first_cut:
                self._running.clear()
        if is_first_call:
            for _ in threads:
                self._inbox.put(None)
        if not graceful:
            if is_first_cut:
                for job, on_done in abandoned:
                    call_on_done(on_done, cut_off_outcome(job))
                # Set after the reports: every waiting stop returns with the outcomes handed over.
                self._cut_off.set()
            self._cut_off.wait()
            return
        for thread in threads:
            if thread is threading.current_thread():
                continue
            while thread.is_alive() and not self._cut_off.is_set():
                thread.join(_JOIN_INTERVAL)

    def info(self) -> dict[str, Any]:
        """Describe the pool for ``inspect stats``."""
        return {
            "implementation": "celeriac.worker.pools.threads:ThreadPool",
            "max-concurrency": self.limit,
            "processes": [os.getpid()],
            "max-tasks-per-child": "N/A",
            "timeouts": describe_timeouts(self._soft_time_limit, self._time_limit),
        }

    def _add_threads(self, n: int) -> None:
        threads = [
            threading.Thread(
                target=self._serve,
                name=f"celeriac-pool-thread-{next(self._thread_numbers)}",
                daemon=True,
            )
            for _ in range(n)
        ]
        with self._lock:
            self._threads.extend(threads)
        for thread in threads:
            thread.start()

    def _serve(self) -> None:
        thread_id = threading.get_ident()
        while (item := self._inbox.get()) is not None:
            job, on_done = item
            with self._lock:
                is_dropped = self._is_dropping_jobs
                if not is_dropped:
                    self._running[thread_id] = item
            if is_dropped:
                call_on_done(on_done, not_run_outcome(job))
                continue
            outcome = run_job(self._target, job)
            with self._lock:
                is_still_ours = self._running.pop(thread_id, None) is not None
            if is_still_ours:
                call_on_done(on_done, outcome)
        with self._lock:
            self._threads.remove(threading.current_thread())

"""The beat Service: the loop that leads, claims due runs and sends them (edge layer).

Each pass (``tick``): take or renew the lease in the store; a beat without it only waits
to take over. The leader loads the entries' last runs (when it starts leading, and after
a claim that failed), asks the scheduler which runs are due, claims each in the store
and sends the ones it claimed, oldest first. It then sleeps until the next run is due,
``max_interval`` at most, and never longer than a third of the lease, so the lease is
renewed in time and a standby notices a leader's death within ``beat_lease_seconds``
plus that third.

``beat_init`` (sender: the Service) is sent when the loop starts, and
``beat_embedded_init`` besides when it runs inside a worker (``worker -B``), where
``EmbeddedService`` runs it in a thread of the worker's main process.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from celeriac import signals
from celeriac.beat.entry import entries_from_settings
from celeriac.beat.scheduler import DueRun, Scheduler
from celeriac.beat.store import ScheduleStore, open_store
from celeriac.exceptions import ImproperlyConfigured, OperationalError
from celeriac.schedules import configured_timezone

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["DEFAULT_MAX_INTERVAL", "EmbeddedService", "Service"]

logger = logging.getLogger("celeriac.beat")

DEFAULT_MAX_INTERVAL: Final = 300.0
"""Celery's default for ``beat_max_loop_interval`` 0: five minutes."""
# The schedulers a Celery configuration may name; celeriac has the one, persistent.
SUPPORTED_SCHEDULERS: Final = frozenset(
    {
        "celeriac.beat:PersistentScheduler",
        "celeriac.beat.PersistentScheduler",
        "celery.beat:PersistentScheduler",
        "celery.beat.PersistentScheduler",
    }
)
# How long a stopping embedded beat may take to finish its pass.
STOP_TIMEOUT: Final = 10.0


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Service:
    """Celery's ``beat.Service``: ``Service(app).start()`` runs until ``stop()``.

    Args:
        max_interval: longest sleep between checks, in seconds; else
            ``beat_max_loop_interval``, else 300.
        schedule_filename: the local state file when neither the broker nor the result
            store can hold the state (``-s``); else ``beat_schedule_filename``.
        store: the state store; else the one the app's URLs call for (``open_store``).
        now: the clock the schedules are read with (aware datetimes), for tests.
        lease_seconds: how long the lead lasts unless renewed; else
            ``beat_lease_seconds``.
    """

    def __init__(
        self,
        app: Celeriac,
        max_interval: float | None = None,
        schedule_filename: str | None = None,
        *,
        store: ScheduleStore | None = None,
        now: Callable[[], datetime.datetime] = _utc_now,
        lease_seconds: float | None = None,
    ) -> None:
        conf = app.conf
        self.app = app
        self.max_interval = float(
            max_interval or conf.beat_max_loop_interval or DEFAULT_MAX_INTERVAL
        )
        self.schedule_filename = schedule_filename or conf.beat_schedule_filename
        self.lease_seconds = float(lease_seconds or conf.beat_lease_seconds)
        self.now = now
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.is_leader = False
        self._store = store
        self._scheduler: Scheduler | None = None
        self._needs_sync = True
        self._is_shutdown = threading.Event()
        self._is_stopped = threading.Event()

    @property
    def store(self) -> ScheduleStore:
        """Where the lease and last runs live, opened on first use."""
        if self._store is None:
            self._store = open_store(self.app, self.schedule_filename)
        return self._store

    @property
    def scheduler(self) -> Scheduler:
        """The entries of ``beat_schedule`` (after the app is finalized), made on first use.

        Raises:
            ImproperlyConfigured: an entry, the time zone or ``beat_scheduler`` is wrong.
        """
        if self._scheduler is None:
            app = self.app
            app.finalize()
            conf = app.conf
            if conf.beat_scheduler not in SUPPORTED_SCHEDULERS:
                raise ImproperlyConfigured(
                    f"beat_scheduler {conf.beat_scheduler!r} is not supported: celeriac beat"
                    " has one scheduler, which keeps its state in the broker or result store"
                )
            self._scheduler = Scheduler(
                entries_from_settings(conf.beat_schedule),
                configured_timezone(conf),
                cron_starting_deadline=conf.beat_cron_starting_deadline,
            )
        return self._scheduler

    # ---- running ---------------------------------------------------------------------

    def start(self, embedded_process: bool = False) -> None:
        """Run the loop until ``stop()``; give the lease up on the way out."""
        scheduler = self.scheduler
        logger.info(
            "beat: Starting with %d entries, max interval %ss, lease %ss.",
            len(scheduler.entries),
            self.max_interval,
            self.lease_seconds,
        )
        signals.beat_init.send(sender=self)
        if embedded_process:
            signals.beat_embedded_init.send(sender=self)
        try:
            while not self._is_shutdown.is_set():
                self._is_shutdown.wait(self.tick())
        finally:
            self.sync()

    def stop(self, wait: bool = False) -> None:
        """Ask the loop to end; with ``wait``, block until it has."""
        if not self._is_shutdown.is_set():
            logger.info("beat: Shutting down...")
            self._is_shutdown.set()
        if wait:
            self._is_stopped.wait()

    def sync(self) -> None:
        """Give the lease up (a standby takes over at once) and close the store."""
        try:
            if self.is_leader:
                self.store.release_lease(self.owner)
        except OperationalError as exc:
            logger.warning("beat: could not give the lead up: %s", exc)
        finally:
            self.is_leader = False
            if self._store is not None:
                self._store.close()
            self._is_stopped.set()

    def tick(self) -> float:
        """Lead or wait, send what is due; return the seconds to sleep before the next pass."""
        renewal = self.lease_seconds / 3
        try:
            wait = self._lead_and_send()
        except OperationalError as exc:
            logger.warning("beat: state store unavailable, not leading: %s", exc)
            self.is_leader = False
            return renewal
        return max(0.0, min(wait, self.max_interval, renewal))

    def _lead_and_send(self) -> float:
        store = self.store
        if not store.hold_lease(self.owner, self.lease_seconds):
            if self.is_leader:
                logger.warning("beat: another beat has taken the lead")
            self.is_leader = False
            return math.inf
        scheduler = self.scheduler
        if not self.is_leader or self._needs_sync:
            scheduler.load(store.sync_entries(scheduler.fingerprints(), self.now()))
            self._needs_sync = False
            if not self.is_leader:
                logger.info("beat: leading as %s; state in %s", self.owner, store.location)
            self.is_leader = True
        for run in scheduler.due_runs(self.now()):
            if not store.claim_run(self.owner, run.entry.name, run.due, run.send):
                # Another beat recorded it, or the lease ran out: read the state again.
                self._needs_sync = True
                return 0.0
            scheduler.record(run)
            if run.send:
                self._send(run)
            else:
                logger.warning(
                    "Scheduler: Skipping %s due %s: past beat_cron_starting_deadline",
                    run.entry.name,
                    run.due.isoformat(),
                )
        return scheduler.seconds_until_next(self.now())

    def _send(self, run: DueRun) -> None:
        entry = run.entry
        logger.info(
            "Scheduler: Sending due task %s (%s) due %s",
            entry.name,
            entry.task,
            run.due.isoformat(),
        )
        task = self.app.tasks.get(entry.task)
        try:
            if task is not None:
                result = task.apply_async(entry.args, entry.kwargs, **entry.options)
            else:
                result = self.app.send_task(entry.task, entry.args, entry.kwargs, **entry.options)
        except Exception as exc:
            # One run that cannot be sent (a broker down past the publish retries, bad
            # options) is logged, as in Celery, and the schedule goes on.
            logger.error(
                "Message Error: Couldn't apply scheduled task %s: %s",
                entry.name,
                exc,
                exc_info=True,
            )
            return
        logger.debug("%s sent. id->%s", entry.task, result.id)


class EmbeddedService(threading.Thread):
    """Beat in a thread of the worker's main process: ``worker -B``.

    ``start()`` runs the Service (``beat_init`` and ``beat_embedded_init`` are sent in
    this thread); ``stop()`` ends it and waits for it to give the lead up.
    """

    def __init__(self, app: Celeriac, max_interval: float | None = None, **options: Any) -> None:
        super().__init__(name="Beat", daemon=True)
        self.app = app
        self.service = Service(app, max_interval=max_interval, **options)

    def run(self) -> None:
        self.app.set_current()
        try:
            self.service.start(embedded_process=True)
        except Exception:
            # The thread's edge: without this the error would only reach stderr.
            logger.exception("beat: stopped by an error; the worker goes on without beat")

    def stop(self) -> None:
        """End the loop and wait (``STOP_TIMEOUT`` at most) for its last pass."""
        self.service.stop()
        if self.is_alive():
            self.join(STOP_TIMEOUT)

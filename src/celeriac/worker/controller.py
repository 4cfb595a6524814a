"""WorkController: builds the worker's parts, starts them in order, stops them in reverse.

Start: ``celeryd_init`` (at construction, so handlers may change ``conf``), the app's
modules (``import_modules``), ``celeryd_after_setup``, ``worker_init``, one round trip to
the broker (retried as ``broker_connection_retry_on_startup`` says), the pool (whose
children send ``worker_process_init``), the consumer, the heart, the pidbox (remote
control), ``worker_ready``.
Stop: ``worker_shutting_down``; the pidbox stops answering; warm stops fetching, gives
prefetched messages back to the broker unacknowledged and lets running tasks finish;
cold ends them at once; then ``worker_shutdown``. The first SIGINT or SIGTERM asks for a
warm shutdown and says how many tasks it waits for; the second turns it cold, which gives
the messages of cut-off ``acks_late`` tasks back to the broker.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.events.dispatcher import EventDispatcher
from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.base import TransportError
from celeriac.worker.autoscale import Autoscaler
from celeriac.worker.consumer import Consumer
from celeriac.worker.control import ControlState
from celeriac.worker.heartbeat import Heart
from celeriac.worker.pidbox import Pidbox
from celeriac.worker.pools import create_pool
from celeriac.worker.pools.base import ChildHooks, Pool
from celeriac.worker.reconnect import sentence, wait_for_broker
from celeriac.worker.request import execute_job
from celeriac.worker.state import WorkerState

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger("celeriac.worker")

# Task events per message at most. The heart sends a batch 0.1 s after its first event,
# so a busy worker's batches stay well under this and the heart publishes them all: a
# batch that fills up is published by the thread that filled it, holding the dispatcher's
# lock while the fetcher and the pool's threads wait for it. The bench measured -E at 28%
# of a prefork worker's drain on Redis with the dispatcher's default of 24, 16-25% with
# 500, and 1-6% with 5,000.
TASK_EVENT_BATCH = 5000


def default_hostname() -> str:
    """``celeriac@<host>``: the node name when none is given."""
    return f"celeriac@{socket.gethostname()}"


def _child_started() -> None:
    signals.worker_process_init.send(sender=None)


def _child_exiting(pid: int, exitcode: int) -> None:
    signals.worker_process_shutdown.send(sender=None, pid=pid, exitcode=exitcode)


class WorkController:
    """A worker node: ``WorkController(app, ...).start()`` runs until shut down."""

    def __init__(
        self,
        app: Celeriac,
        *,
        hostname: str | None = None,
        pool: str | None = None,
        concurrency: int | None = None,
        queues: Iterable[str] | None = None,
        exclude_queues: Iterable[str] | None = None,
        loglevel: int | str | None = None,
        prefetch_multiplier: int | None = None,
        send_events: bool | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        autoscale: tuple[int, int] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.hostname = hostname or default_hostname()
        self.options = dict(options or {})
        self.exitcode = 0
        signals.celeryd_init.send(
            sender=self.hostname, instance=self, conf=app.conf, options=self.options
        )
        conf = app.conf
        self.pool_name = pool or conf.worker_pool
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        if self.pool_name == "solo":
            self.concurrency = 1
        self.autoscale: tuple[int, int] | None = None
        if autoscale is not None:
            if self.pool_name == "solo":
                raise ImproperlyConfigured(
                    "--autoscale needs a pool that can resize (prefork, threads or gevent):"
                    " the solo pool runs one job at a time"
                )
            maximum, minimum = autoscale
            self.autoscale = (maximum, max(minimum, 1))
            self.concurrency = self.autoscale[1]
        multiplier = conf.worker_prefetch_multiplier
        self.prefetch_multiplier = (
            multiplier if prefetch_multiplier is None else prefetch_multiplier
        )
        self.send_events = conf.worker_send_task_events if send_events is None else send_events
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child or conf.worker_max_memory_per_child
        self.time_limit = time_limit or conf.task_time_limit
        self.soft_time_limit = soft_time_limit or conf.task_soft_time_limit
        self.loglevel = loglevel
        app.import_default_modules()
        self._select_queues(queues, exclude_queues)
        self.state = WorkerState()
        self._shutdown = threading.Event()
        # "Warm" or "Cold" once a stop is asked for; claimed before it is announced.
        self._how: str | None = None
        self._stop_signals = itertools.count()
        self.pool: Pool | None = None
        self.consumer: Consumer | None = None
        self.heart: Heart | None = None
        self.pidbox: Pidbox | None = None
        self.autoscaler: Autoscaler | None = None
        self.events: EventDispatcher | None = None
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=conf)

    def _select_queues(self, queues: Iterable[str] | None, exclude: Iterable[str] | None) -> None:
        """Narrow ``app.amqp.queues`` to ``-Q`` and ``-X``; by default every declared queue."""
        declared = self.app.amqp.queues
        if queues:
            declared.select(list(dict.fromkeys(queues)))
        if exclude:
            declared.deselect(exclude)

    @property
    def queues(self) -> list[str]:
        """The names of the queues this worker consumes (``app.amqp.queues.consume_from``).

        Read when the consumer starts, so queues added in ``celeryd_after_setup`` count.
        """
        return list(self.app.amqp.queues.consume_from)

    @property
    def prefetch_count(self) -> int:
        """Messages held at most: concurrency (the autoscaler's MAX, if any) times the
        multiplier (0 means one per slot)."""
        slots = self.autoscale[0] if self.autoscale is not None else self.concurrency
        return slots * self.prefetch_multiplier

    # ---- running ---------------------------------------------------------------------

    def start(self) -> None:
        """Start every part, then block until a shutdown is asked for and done."""
        self._install_signal_handlers()
        signals.worker_init.send(sender=self)
        app = self.app
        retry = app.conf.broker_connection_retry_on_startup
        if not wait_for_broker(app, retry=retry, stopping=self._shutdown):
            if not self._shutdown.is_set():
                self.exitcode = 1
            self._stop_parts()
            return
        for task in app.tasks.values():
            task.annotate()
        groups = ["worker", "task"] if self.send_events else ["worker"]
        self.events = EventDispatcher(
            app.transport,
            hostname=self.hostname,
            app=app,
            groups=groups,
            buffer_group=["task"],
            buffer_limit=TASK_EVENT_BATCH,
            on_send_buffered=self._task_event_buffered,
        )
        self.pool = create_pool(
            self.pool_name,
            execute_job,
            self.concurrency,
            hooks=ChildHooks(
                before_create=self._before_create_process,
                on_start=_child_started,
                on_exit=_child_exiting,
            ),
            max_tasks_per_child=self.max_tasks_per_child,
            max_memory_per_child=self.max_memory_per_child,
            soft_time_limit=self.soft_time_limit,
            time_limit=self.time_limit,
            proc_alive_timeout=app.conf.worker_proc_alive_timeout,
        )
        self.pool.start()
        self.consumer = Consumer(
            app,
            app.transport,
            self.pool,
            self.state,
            self.events,
            hostname=self.hostname,
            queues=self.queues,
            prefetch_count=self.prefetch_count,
            time_limit=self.time_limit,
            soft_time_limit=self.soft_time_limit,
            reconnect=self._reconnect,
        )
        self.consumer.start()
        if self.autoscale is not None:
            maximum, minimum = self.autoscale
            self.autoscaler = Autoscaler(self.pool, self.consumer, self.state, maximum, minimum)
            self.autoscaler.start()
        self.heart = Heart(self.events, self._counters, app.conf.worker_heartbeat_interval)
        self.heart.start()
        self.pidbox = Pidbox(ControlState(self), app.transport, app.conf.control_exchange)
        self.pidbox.start()
        logger.info(
            "%s ready: pool %s (%d), queues %s, broker %s",
            self.hostname,
            self.pool_name,
            self.concurrency,
            ", ".join(self.queues),
            _redacted(app.broker_url),
        )
        signals.worker_ready.send(sender=self.consumer)
        while not self._shutdown.wait(0.5):
            pass
        self._stop_parts()

    def _reconnect(self, exc: TransportError) -> bool:
        """Wait for the broker after fetching failed; False means the worker is stopping."""
        retry = self.app.conf.broker_connection_retry
        logger.warning(
            "consumer: Connection to broker lost: %s. %s",
            sentence(exc),
            "Trying to re-establish the connection..."
            if retry
            else "broker_connection_retry is off.",
        )
        if wait_for_broker(self.app, retry=retry, stopping=self._shutdown):
            return True
        if not self._shutdown.is_set():
            self.stop(warm=True, sig="broker connection lost", exitcode=1)
        return False

    def _before_create_process(self) -> None:
        signals.worker_before_create_process.send(sender=self.pool)

    def _task_event_buffered(self) -> None:
        """Have the heart send the batched task events shortly (it starts after the
        consumer; until then its ``worker-online`` sends them)."""
        if self.heart is not None:
            self.heart.flush_soon()

    def _counters(self) -> tuple[int, int]:
        return len(self.state.active), self.state.processed

    def stop(self, *, warm: bool = True, sig: str | None = None, exitcode: int = 0) -> None:
        """Ask the worker to shut down: warm lets running tasks finish, cold ends them.

        A cold stop may follow a warm one that is still waiting for its tasks, and cuts it
        short; further calls change nothing.
        """
        how = "Warm" if warm else "Cold"
        if self._how == "Cold" or (warm and self._how is not None):
            return
        self._how = how
        self.exitcode = exitcode
        signals.worker_shutting_down.send(sender=self.hostname, sig=sig, how=how, exitcode=exitcode)
        self._announce(how, sig)
        self._shutdown.set()
        if not warm:
            self._cut_off_running_tasks()

    def _announce(self, how: str, sig: str | None) -> None:
        """Log the shutdown, how many tasks it waits for or stops, and how to hurry it."""
        running = len(self.state.active)
        cause = sig or "requested"
        if not running:
            logger.warning("worker: %s shutdown (%s)", how, cause)
        elif how == "Cold":
            logger.warning(
                "worker: Cold shutdown (%s): stopping %s", cause, _running_tasks(running)
            )
        else:
            logger.warning(
                "worker: Warm shutdown (%s): waiting for %s to finish",
                cause,
                _running_tasks(running),
            )
            again = {"SIGINT": "Hitting Ctrl+C", "SIGTERM": "Sending SIGTERM"}.get(sig or "")
            if again:
                logger.warning(
                    "worker: %s again will initiate cold shutdown, terminating all running tasks!",
                    again,
                )

    def _cut_off_running_tasks(self) -> None:
        """Stop fetching and stop the pool at once, from a thread of its own.

        The call may come from a signal handler that interrupted the main thread anywhere,
        even inside the pool's graceful stop or holding a lock of the consumer, so no lock
        is taken here: only the flag that tells how lost jobs are to be reported is set,
        before any pool stop can report one.
        """
        if self.consumer is not None:
            self.consumer.is_cutting_off = True
        threading.Thread(
            target=self._stop_at_once, name="celeriac-cold-shutdown", daemon=True
        ).start()

    def _stop_at_once(self) -> None:
        if self.consumer is not None:
            self.consumer.begin_cold_shutdown()
        if self.pool is not None:
            self.pool.stop(graceful=False)

    def _stop_parts(self) -> None:
        warm = self._how != "Cold"
        if self.pidbox is not None:
            self.pidbox.stop()
        if self.autoscaler is not None:
            self.autoscaler.stop()
        if self.consumer is not None:
            self.consumer.stop_fetching()
        if self.pool is not None:
            self.pool.stop(graceful=warm)
        if self.consumer is not None:
            self.consumer.close()
        if self.heart is not None:
            self.heart.stop()
        if self.events is not None:
            self.events.close()
        signals.worker_shutdown.send(sender=self)
        self.app.close()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def warm(signum: int, frame: Any) -> None:
            # A second signal can run this handler inside the first one, before that one
            # has logged its warning and set the flag; ``next`` on a counter is one step
            # no handler can come between, so two signals always make one warm, one cold.
            first = next(self._stop_signals) == 0 and self._how is None
            self.stop(warm=first, sig=signal.Signals(signum).name, exitcode=0 if first else 1)

        def cold(signum: int, frame: Any) -> None:
            self.stop(warm=False, sig=signal.Signals(signum).name, exitcode=1)

        signal.signal(signal.SIGTERM, warm)
        signal.signal(signal.SIGINT, warm)
        signal.signal(signal.SIGQUIT, cold)


def _running_tasks(count: int) -> str:
    return f"{count} running task" if count == 1 else f"{count} running tasks"


def _redacted(url: str) -> str:
    from celeriac.transports import redact_url

    return redact_url(url)

"""OutcomeHandler: what the main process does when a pool reports a job's outcome.

The job itself stored its result and sent its task signals; here the worker finishes
the message (late ack, requeue or dead letter), records failures of jobs whose process
died, sends the task events, and frees the pool slot.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from celeriac import signals, states
from celeriac.exceptions import TaskRevokedError, WorkerLostError
from celeriac.worker.pools.base import JobOutcome
from celeriac.worker.request import Request
from celeriac.worker.settlement import Action, redelivery_delay

if TYPE_CHECKING:
    from celeriac.worker.consumer import Consumer

logger = logging.getLogger("celeriac.worker")


class OutcomeHandler:
    """Finishes each request once its job is done."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def handle(self, request: Request, outcome: JobOutcome) -> None:
        """Settle ``request`` given ``outcome``; called from pool threads."""
        consumer = self.consumer
        try:
            if outcome.lost:
                self._lost(request, outcome)
            elif outcome.state == states.REJECTED:
                self._rejected(request, outcome)
            else:
                self._finished(request, outcome)
        except Exception:
            logger.exception("Handling the outcome of task %s[%s] failed", request.name, request.id)
        finally:
            consumer.state.finish(request)
            consumer.slot_freed()

    def _finished(self, request: Request, outcome: JobOutcome) -> None:
        consumer = self.consumer
        task = consumer.app.tasks.get(request.name)
        failed = outcome.state == states.FAILURE
        if not request.acknowledged:
            if failed and task is not None and not task.option("acks_on_failure_or_timeout"):
                consumer.settle(request, Action.DEAD_LETTER, reason="task failed")
            else:
                consumer.ack(request)
        info = outcome.info
        if outcome.state == states.SUCCESS:
            consumer._send_task_event(
                "task-succeeded", request, result=info.get("result"), runtime=outcome.runtime
            )
        elif outcome.state == states.RETRY:
            consumer._send_task_event(
                "task-retried",
                request,
                exception=info.get("exception"),
                traceback=info.get("traceback"),
            )
        elif failed:
            consumer._send_task_event(
                "task-failed",
                request,
                exception=info.get("exception"),
                traceback=info.get("traceback"),
            )

    def _rejected(self, request: Request, outcome: JobOutcome) -> None:
        consumer = self.consumer
        if outcome.info.get("undecodable"):
            reason = str(outcome.info.get("reason"))
            logger.error("Dead-lettering message %s: %s", request.tag, reason)
            if request.acknowledged:
                consumer.dead_letter_envelope(request, reason)
            else:
                consumer.settle(request, Action.DEAD_LETTER, reason=reason)
            if outcome.exception is not None:
                # Refused by a check in the pool (a bad signature): as reject_malformed does.
                envelope = request.delivery.envelope
                signals.task_rejected.send(sender=consumer, message=envelope, exc=outcome.exception)
                consumer.store_outcome(request, states.FAILURE, outcome.exception)
            consumer._send_task_event("task-rejected", request, requeue=False)
            return
        if not request.acknowledged:
            consumer.settle(request, Action.REQUEUE if outcome.requeue else Action.DROP)
        consumer._send_task_event("task-rejected", request, requeue=outcome.requeue)

    def _lost(self, request: Request, outcome: JobOutcome) -> None:
        """The process running the job died or was killed: record it for the job.

        With ``reject_on_worker_lost`` the message goes back to the broker after a short
        growing delay, until ``task_max_deliveries`` deliveries all lost their process;
        then it is dead-lettered and FAILURE stored, so a poison task cannot loop for ever.
        """
        consumer = self.consumer
        exc = outcome.exception or WorkerLostError("the job's process was lost")
        if isinstance(exc, TaskRevokedError):
            signum = outcome.info.get("signum")
            consumer.discard_revoked(request, expired=False, terminated=True, signum=signum)
            return
        if consumer.is_cutting_off:
            self._cut_off(request)
            return
        task = consumer.app.tasks.get(request.name)
        logger.error("Task %s[%s] lost: %r", request.name, request.id, exc)
        if not request.acknowledged and task is not None and task.option("reject_on_worker_lost"):
            count, limit = request.delivery.delivery_count, consumer.max_deliveries
            if not limit or count < limit:
                consumer.settle(request, Action.REQUEUE, delay=redelivery_delay(count))
                return
            reason = f"{exc}; lost its process in {count} deliveries (task_max_deliveries={limit})"
            exc = WorkerLostError(reason)
            consumer.settle(request, Action.DEAD_LETTER, reason=f"WorkerLostError: {reason}")
        consumer.store_outcome(request, states.FAILURE, exc)
        if not request.acknowledged:
            consumer.ack(request)
        consumer._send_task_event("task-failed", request, exception=repr(exc), traceback=None)

    def _cut_off(self, request: Request) -> None:
        """A cold shutdown ended the job: give its message back, or say why it is lost.

        With ``acks_late`` the message is still unacknowledged and goes back to the broker
        for another worker (as a warm shutdown's prefetched messages do). Otherwise it was
        acknowledged when the task started, so FAILURE is stored with the reason and the fix.
        """
        consumer = self.consumer
        if not request.acknowledged:
            logger.warning(
                "Task %s[%s] cut off by the cold shutdown: its message goes back to the broker",
                request.display_name,
                request.id,
            )
            consumer.settle(request, Action.RELEASE)
            return
        exc = WorkerLostError(
            f"Task {request.display_name}[{request.id}] was cut off by a cold shutdown of"
            f" {consumer.hostname}. It was acknowledged when it started, so it will not run"
            " again: set acks_late (task_acks_late) to have such tasks redelivered."
        )
        logger.error("%s", exc)
        consumer.store_outcome(request, states.FAILURE, exc)
        consumer._send_task_event("task-failed", request, exception=repr(exc), traceback=None)

"""The Pool interface: run jobs concurrently and report each outcome.

The worker hands a pool a ``Job`` only when a slot is free, so a pool never holds a
backlog of its own: prefetched messages stay with the consumer, which gives them back
to the broker on warm shutdown. ``Job`` and ``JobOutcome`` are picklable so that the
prefork pool can send them through pipes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Job:
    """One task invocation for a pool; ``payload`` is opaque to the pool and read by the target."""

    task_id: str
    task_name: str
    payload: Any
    time_limit: float | None = None
    soft_time_limit: float | None = None


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What became of a job.

    ``state`` is a task state name (SUCCESS, FAILURE, RETRY, REVOKED), ``IGNORED`` or
    ``REJECTED``. ``lost`` is true when the process running the job died or was killed
    (hard time limit, crash, terminate), so nothing was stored by the job itself and the
    worker must record the failure in ``exception``. A ``REJECTED`` outcome whose message
    failed a check (its signature) carries that check's error in ``exception`` too.
    """

    task_id: str
    state: str
    runtime: float = 0.0
    requeue: bool = False
    lost: bool = False
    exception: BaseException | None = None
    info: dict[str, Any] = field(default_factory=dict)


JobTarget = Callable[[Job], JobOutcome]
DoneCallback = Callable[[JobOutcome], None]


@dataclass(frozen=True, slots=True)
class ChildHooks:
    """Callbacks of a process pool: in the parent before each fork, and in each child after
    it starts and before it exits."""

    before_create: Callable[[], None] = lambda: None
    on_start: Callable[[], None] = lambda: None
    on_exit: Callable[[int, int], None] = lambda pid, exitcode: None


@runtime_checkable
class Pool(Protocol):
    """A set of execution slots; ``limit`` is how many jobs may run at once."""

    limit: int

    def start(self) -> None:
        """Create the threads or processes."""
        ...

    def apply(self, job: Job, on_done: DoneCallback) -> None:
        """Run ``job`` in a free slot and call ``on_done`` with its outcome from any thread."""
        ...

    def terminate_job(self, task_id: str, signum: int) -> bool:
        """Stop the running job with that id if this pool can; return whether it was found."""
        ...

    def grow(self, n: int = 1) -> None:
        """Add ``n`` slots."""
        ...

    def shrink(self, n: int = 1) -> None:
        """Remove ``n`` slots once they are idle."""
        ...

    def stop(self, *, graceful: bool) -> None:
        """Stop: wait for running jobs when ``graceful``, otherwise end them at once."""
        ...

    def info(self) -> dict[str, Any]:
        """Describe the pool for ``inspect stats``: implementation, max-concurrency, processes."""
        ...

"""Exceptions, with Celery's names so user code that catches them keeps working.

Hierarchy::

    Exception
    ├── CeleriacError (alias CeleryError)
    │   ├── ImproperlyConfigured
    │   ├── NotRegistered (also a KeyError)
    │   ├── AlreadyRegistered
    │   ├── TimeoutError (also the builtin TimeoutError)
    │   ├── MaxRetriesExceededError
    │   ├── TaskRevokedError
    │   ├── QueueNotFound (also a KeyError)
    │   ├── IncompleteStream
    │   ├── ChordError
    │   ├── OperationalError            broker or result store unreachable
    │   ├── SerializationError          kombu's base of the two below
    │   │   ├── EncodeError             a value the serializer cannot encode
    │   │   └── DecodeError             a message that cannot be decoded
    │   │       └── ContentDisallowed   a content type not in accept_content
    │   └── SecurityError
    ├── TaskPredicate                   control flow raised inside a task
    │   ├── Retry
    │   ├── Ignore
    │   └── Reject
    ├── WorkerLostError, WorkerTerminate, WorkerShutdown
    ├── SoftTimeLimitExceeded, TimeLimitExceeded
    └── InvalidTaskError, NotConfigured (warning), DuplicateNodenameWarning
"""

from __future__ import annotations

import builtins
import datetime
from typing import Any


class CeleriacError(Exception):
    """Base class of every celeriac error."""


CeleryError = CeleriacError


class ImproperlyConfigured(CeleriacError):
    """The configuration is invalid or incomplete."""


class ChordsNotSupported(ImproperlyConfigured, NotImplementedError):
    """The result backend in use cannot count a chord's header (none, or ``rpc://``).

    A ``NotImplementedError`` too, which is what Celery raises for ``rpc://``.
    """


class NotRegistered(KeyError, CeleriacError):
    """The task name is not in the registry."""

    def __repr__(self) -> str:
        return f"NotRegistered({self.args[0]!r})" if self.args else "NotRegistered()"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AlreadyRegistered(CeleriacError):
    """A task with that name is already registered."""


class TimeoutError(CeleriacError, builtins.TimeoutError):
    """The operation did not complete within the time given."""


class MaxRetriesExceededError(CeleriacError):
    """The task was retried more than its max_retries allow."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None) -> None:
        super().__init__(*args)
        self.task_args = task_args
        self.task_kwargs = task_kwargs


class TaskRevokedError(CeleriacError):
    """The task was revoked, terminated or expired before it could finish."""


class QueueNotFound(KeyError, CeleriacError):
    """A task was routed to a queue that is not defined."""


class IncompleteStream(CeleriacError):
    """A stream of results ended before all were received."""


class ChordError(CeleriacError):
    """A chord's header failed, so its body cannot run."""


class OperationalError(CeleriacError):
    """The broker or result store could not be reached or refused the operation."""


class SerializationError(CeleriacError):
    """A value could not be encoded or decoded (kombu's ``SerializationError``)."""


class EncodeError(SerializationError):
    """A value could not be encoded: task arguments or a return value the serializer refuses.

    Stored results name it ``kombu.exceptions.EncodeError``, so a Celery reader catches it
    with the class it knows.
    """


class DecodeError(SerializationError):
    """A message body could not be decoded."""


class ContentDisallowed(DecodeError):
    """A message used a content type that accept_content does not allow."""


class SecurityError(CeleriacError):
    """A message or result failed a security check."""


class InvalidTaskError(CeleriacError):
    """A message is not a valid task message."""


class TaskPredicate(Exception):
    """Base class for the control-flow exceptions a task raises to tell the worker what to do."""


class Retry(TaskPredicate):
    """The task is to be retried: raised by Task.retry."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | str | None = None,
        when: float | datetime.datetime | None = None,
        is_eager: bool = False,
        sig: Any = None,
        **kwargs: Any,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(message, exc, when, **kwargs)

    def humanize(self) -> str:
        """Say when the retry happens, as in Celery's log line."""
        if isinstance(self.when, int | float):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.message, self.exc, self.when)


RetryTaskError = Retry


class Ignore(TaskPredicate):
    """The worker is to ignore the task: no state is stored and no result is sent."""


class Reject(TaskPredicate):
    """The worker is to reject the message, optionally putting it back on the queue."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class WorkerLostError(Exception):
    """The process running the task exited before reporting an outcome."""


class WorkerTerminate(SystemExit):
    """Raised to stop the worker at once (cold shutdown)."""


SystemTerminate = WorkerTerminate


class WorkerShutdown(SystemExit):
    """Raised to stop the worker after running tasks finish (warm shutdown)."""


class SoftTimeLimitExceeded(Exception):
    """The task ran past its soft time limit; it may clean up before the hard limit."""

    def __str__(self) -> str:
        return "SoftTimeLimitExceeded" + (f"{self.args!r}" if self.args else "()")


class TimeLimitExceeded(Exception):
    """The task ran past its hard time limit and was terminated."""


class NotConfigured(UserWarning):
    """The app has not been configured; defaults are in use."""


class DuplicateNodenameWarning(UserWarning):
    """Two workers use the same node name."""

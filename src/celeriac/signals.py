"""The signal catalog: every signal Celery documents, with its name and keyword arguments (core).

Handlers written for ``celery.signals`` work unchanged: connect to a signal
here and it is sent with the keyword arguments its docstring lists, plus
``signal`` and ``sender``, as seeds 000-002 describe. Accept ``**kwargs`` in
every handler so that arguments added later do not break it.
"""

from __future__ import annotations

from celeriac.dispatch import Signal

__all__ = [
    "after_setup_logger",
    "after_setup_task_logger",
    "after_task_publish",
    "beat_embedded_init",
    "beat_init",
    "before_task_publish",
    "celeryd_after_setup",
    "celeryd_init",
    "eventlet_pool_apply",
    "eventlet_pool_postshutdown",
    "eventlet_pool_preshutdown",
    "eventlet_pool_started",
    "heartbeat_sent",
    "import_modules",
    "setup_logging",
    "task_failure",
    "task_internal_error",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_sent",
    "task_success",
    "task_unknown",
    "user_preload_options",
    "worker_before_create_process",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
    "worker_shutting_down",
]

# ---- task signals ----

before_task_publish = Signal(
    name="before_task_publish",
    providing_args={
        "body",
        "exchange",
        "routing_key",
        "headers",
        "properties",
        "declare",
        "retry_policy",
    },
)
"""Sent before a task message is published, in the process sending the task.

Sender: the name of the task being sent. Arguments: ``body`` (the message
body), ``exchange`` (name of the exchange to send to), ``routing_key``,
``headers`` (may be modified), ``properties`` (may be modified), ``declare``
(entities to declare before publishing, may be modified) and ``retry_policy``
(the publish retry options, may be modified).
"""

after_task_publish = Signal(
    name="after_task_publish",
    providing_args={"headers", "body", "exchange", "routing_key"},
)
"""Sent once a task message has been handed to the broker, in the process sending the task.

Sender: the name of the task sent. Arguments: ``headers``, ``body``,
``exchange`` (name of the exchange used) and ``routing_key``. With task
protocol 2 the task's id and name are in ``headers``.
"""

task_prerun = Signal(
    name="task_prerun",
    providing_args={"task_id", "task", "args", "kwargs"},
)
"""Sent before a task runs, in the process that runs it (pool child, worker, or caller if eager).

Sender: the task being run. Arguments: ``task_id``, ``task`` (the task
being run), ``args`` (its positional arguments) and ``kwargs`` (its keyword
arguments).
"""

task_postrun = Signal(
    name="task_postrun",
    providing_args={"task_id", "task", "args", "kwargs", "retval", "state"},
)
"""Sent after a task has run, in the process that ran it.

Sender: the task run. Arguments: ``task_id``, ``task``, ``args``, ``kwargs``,
``retval`` (the return value, or the exception) and ``state`` (the name of
the resulting state).
"""

task_retry = Signal(
    name="task_retry",
    providing_args={"request", "reason", "einfo"},
)
"""Sent when a task will be retried, in the process that ran it.

Sender: the task. Arguments: ``request`` (the current task request),
``reason`` (why it is retried: usually the exception, always coercible to
str) and ``einfo`` (the exception details, traceback included).
"""

task_success = Signal(
    name="task_success",
    providing_args={"result"},
)
"""Sent when a task succeeds, in the process that ran it.

Sender: the task run. Arguments: ``result`` (the task's return value).
"""

task_failure = Signal(
    name="task_failure",
    providing_args={"task_id", "exception", "args", "kwargs", "traceback", "einfo"},
)
"""Sent when a task fails, in the process that ran it.

Sender: the task run. Arguments: ``task_id``, ``exception`` (the exception
instance raised), ``args`` and ``kwargs`` (the task's arguments),
``traceback`` (the traceback object) and ``einfo`` (the exception details).
"""

task_internal_error = Signal(
    name="task_internal_error",
    providing_args={"task_id", "args", "kwargs", "request", "exception", "traceback", "einfo"},
)
"""Sent when celeriac itself fails while running a task, in the process running it.

Sender: the task. Arguments: ``task_id``, ``args``, ``kwargs``, ``request``
(the original request dict, given because ``task.request`` may not be ready
when the error happens), ``exception``, ``traceback`` and ``einfo``.
"""

task_received = Signal(
    name="task_received",
    providing_args={"request"},
)
"""Sent when a task message is received and ready to run, in the worker's main process.

Sender: the worker's consumer. Arguments: ``request`` (the worker's Request,
not ``task.request``: with a prefork pool this runs in the parent process,
where ``task.request`` does not exist; the Request has most of its fields).
"""

task_revoked = Signal(
    name="task_revoked",
    providing_args={"request", "terminated", "signum", "expired"},
)
"""Sent when the worker revokes or terminates a task, in the worker's main process.

Sender: the task revoked. Arguments: ``request`` (the worker's Request),
``terminated`` (True if the task was terminated), ``signum`` (the signal
number used to terminate it; None with ``terminated`` True means TERM) and
``expired`` (True if the task had expired).
"""

task_unknown = Signal(
    name="task_unknown",
    providing_args={"name", "id", "message", "exc"},
)
"""Sent when the worker receives a message for a task that is not registered, in its main process.

Sender: the worker's consumer. Arguments: ``name`` (the unregistered task
name), ``id`` (the task id found in the message), ``message`` (the raw
message) and ``exc`` (the error raised).
"""

task_rejected = Signal(
    name="task_rejected",
    providing_args={"message", "exc"},
)
"""Sent when the worker receives a message of unknown type on a task queue, in its main process.

Also sent when a message is dead-lettered after too many deliveries. Sender:
the worker's consumer. Arguments: ``message`` (the raw message) and ``exc``
(the error, if any).
"""

task_sent = Signal(
    name="task_sent",
    providing_args={"task_id", "task", "args", "kwargs", "eta", "taskset"},
)
"""Deprecated: use after_task_publish. Sent when a task is sent, in the process sending it.

Kept so that handlers written for old Celery (seed 000) still connect.
Sender: the name of the task sent. Arguments: ``task_id``, ``task``,
``args``, ``kwargs``, ``eta`` (when the task should run) and ``taskset``
(the id of the group the task belongs to, if any).
"""

# ---- app signals ----

import_modules = Signal(name="import_modules")
"""Sent when a program (worker, beat, shell...) imports the modules named by include and imports.

Sender: the app. No arguments.
"""

# ---- worker signals ----

celeryd_after_setup = Signal(
    name="celeryd_after_setup",
    providing_args={"instance", "conf"},
)
"""Sent after the worker instance is set up but before it runs, in the worker's main process.

The queues from ``-Q`` are enabled and logging is set up, so a handler can
add a queue of its own. Sender: the worker's node name. Arguments:
``instance`` (the worker being set up; only its ``app`` and ``hostname`` are
set yet) and ``conf`` (the app's configuration).
"""

celeryd_init = Signal(
    name="celeryd_init",
    providing_args={"instance", "conf", "options"},
)
"""Sent first when a worker starts, in the worker's main process; fit to configure one worker.

Sender: the worker's node name. Arguments: ``instance`` (the worker being
initialised; only its ``app`` and ``hostname`` are set yet), ``conf`` (the
app's configuration, which may be changed) and ``options`` (the options
given on the command line, defaults included).
"""

worker_init = Signal(name="worker_init")
"""Sent before the worker starts, in the worker's main process.

Sender: the worker. No arguments.
"""

worker_before_create_process = Signal(name="worker_before_create_process")
"""Sent in the worker's main process just before it creates a pool child process.

Sender: the pool. No arguments.
"""

worker_ready = Signal(name="worker_ready")
"""Sent when the worker is ready to accept work, in the worker's main process.

Sender: the worker's consumer. No arguments.
"""

heartbeat_sent = Signal(name="heartbeat_sent")
"""Sent when the worker has sent a worker-heartbeat event, in the worker's main process.

Sender: the worker's heart (the heartbeat sender). No arguments.
"""

worker_shutting_down = Signal(
    name="worker_shutting_down",
    providing_args={"sig", "how", "exitcode"},
)
"""Sent when the worker begins to shut down, in the worker's main process.

Sender: the worker's node name. Arguments: ``sig`` (the POSIX signal
received), ``how`` (the shutdown method, warm or cold) and ``exitcode``
(the exit code the worker will use).
"""

worker_process_init = Signal(name="worker_process_init")
"""Sent in every pool child process when it starts.

A handler must not block for more than 4 seconds, or the child is
considered failed and killed. Sender: none. No arguments.
"""

worker_process_shutdown = Signal(
    name="worker_process_shutdown",
    providing_args={"pid", "exitcode"},
)
"""Sent in every pool child process just before it exits; not guaranteed to be sent.

Sender: none. Arguments: ``pid`` (the child's process id) and ``exitcode``
(the exit code the child will use).
"""

worker_shutdown = Signal(name="worker_shutdown")
"""Sent when the worker is about to shut down, in the worker's main process.

Sender: the worker. No arguments.
"""

# ---- beat signals ----

beat_init = Signal(name="beat_init")
"""Sent when beat starts, standalone or embedded in a worker (``-B``), in the beat process.

Sender: the beat Service. No arguments.
"""

beat_embedded_init = Signal(name="beat_embedded_init")
"""Sent, besides beat_init, when beat starts embedded in a worker (``-B``).

Sender: the beat Service. No arguments.
"""

# ---- eventlet signals ----

eventlet_pool_started = Signal(name="eventlet_pool_started")
"""Sent when the eventlet pool has started, in the worker's main process.

Sender: the eventlet pool. No arguments.
"""

eventlet_pool_preshutdown = Signal(name="eventlet_pool_preshutdown")
"""Sent at worker shutdown, just before the eventlet pool waits for its remaining workers.

Sender: the eventlet pool. No arguments.
"""

eventlet_pool_postshutdown = Signal(name="eventlet_pool_postshutdown")
"""Sent when the eventlet pool has been joined and the worker is ready to shut down.

Sender: the eventlet pool. No arguments.
"""

eventlet_pool_apply = Signal(
    name="eventlet_pool_apply",
    providing_args={"target", "args", "kwargs"},
)
"""Sent whenever a task is applied to the eventlet pool, in the worker's main process.

Sender: the eventlet pool. Arguments: ``target`` (the target function),
``args`` (its positional arguments) and ``kwargs`` (its keyword arguments).
"""

# ---- logging signals ----

setup_logging = Signal(
    name="setup_logging",
    providing_args={"loglevel", "logfile", "format", "colorize"},
)
"""Sent when logging is set up; if any handler is connected, celeriac leaves logging to it.

Sender: none. Arguments: ``loglevel`` (the log level), ``logfile`` (the log
file name, or None), ``format`` (the log format) and ``colorize`` (whether
messages are coloured).
"""

after_setup_logger = Signal(
    name="after_setup_logger",
    providing_args={"logger", "loglevel", "logfile", "format", "colorize"},
)
"""Sent after each global (non-task) logger is set up, to add to its configuration.

Sender: none. Arguments: ``logger`` (the logger object), ``loglevel``,
``logfile``, ``format`` and ``colorize``.
"""

after_setup_task_logger = Signal(
    name="after_setup_task_logger",
    providing_args={"logger", "loglevel", "logfile", "format", "colorize"},
)
"""Sent after each task logger is set up, to add to its configuration.

Sender: none. Arguments: ``logger`` (the logger object), ``loglevel``,
``logfile``, ``format`` and ``colorize``.
"""

# ---- command signals ----

user_preload_options = Signal(
    name="user_preload_options",
    providing_args={"app", "options"},
)
"""Sent after a command-line program has parsed the user preload options, in that program.

Sender: the command being run. Arguments: ``app`` (the app) and ``options``
(the parsed user preload options, defaults included).
"""

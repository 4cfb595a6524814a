"""The table of every setting: Celery's name, its default, and a line on what it does.

Only names listed here are validated; anything else a user sets is kept as given, as
Celery does, so apps can carry their own settings in ``app.conf``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from celeriac.exceptions import ImproperlyConfigured


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its type is used to coerce and check values a user gives."""

    name: str
    default: Any
    type: type | tuple[type, ...] | None
    doc: str


def environment_number(variable: str, default: float) -> float:
    """A number from Celery's environment variable ``variable``, else ``default``.

    Celery reads a few worker limits only from the environment (``CELERY_WORKER_*``), so a
    deployment that sets them keeps them.

    Raises:
        ImproperlyConfigured: the variable is set but is not a number.
    """
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{variable}={value!r} is not a number") from None


NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))
OPTIONAL_STR = (str, type(None))
SEQUENCE = (list, tuple, set, frozenset)
OPTIONAL_SECRET = (str, bytes, type(None))

DEFAULT_PUBLISH_RETRY_POLICY = {
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}

SETTINGS: tuple[Setting, ...] = (
    # broker
    Setting("broker_url", None, OPTIONAL_STR, "Broker URL; none means the embedded SQLite file."),
    Setting("broker_read_url", None, OPTIONAL_STR, "Broker URL for consumers, if different."),
    Setting("broker_write_url", None, OPTIONAL_STR, "Broker URL for producers, if different."),
    Setting("broker_transport_options", {}, dict, "Options handed to the transport."),
    Setting("broker_connection_retry", True, bool, "Retry lost broker connections."),
    Setting("broker_connection_retry_on_startup", True, bool, "Retry the first connection."),
    Setting("broker_connection_max_retries", 100, (int, type(None)), "Give up after this many."),
    Setting("broker_connection_timeout", 4.0, NUMBER, "Seconds to wait for a connection."),
    Setting("broker_heartbeat", 120.0, OPTIONAL_NUMBER, "AMQP heartbeat in seconds."),
    Setting("broker_pool_limit", 10, (int, type(None)), "Connections kept in the pool."),
    Setting("broker_failover_strategy", None, OPTIONAL_STR, "round-robin or shuffle over URLs."),
    # results
    Setting("result_backend", None, OPTIONAL_STR, "Result store URL; none follows the broker."),
    Setting("result_serializer", "json", str, "Serializer for stored results."),
    Setting("result_accept_content", None, (list, tuple, type(None)), "Accepted result types."),
    Setting("result_expires", 86400.0, OPTIONAL_NUMBER, "Seconds results are kept."),
    Setting("result_extended", False, bool, "Store name, args, kwargs, worker, retries, queue."),
    Setting("result_backend_transport_options", {}, dict, "Options handed to the backend."),
    Setting("result_persistent", None, (bool, type(None)), "Persistent result messages."),
    Setting("result_compression", None, OPTIONAL_STR, "Compression for stored results."),
    Setting(
        "result_backend_always_retry",
        True,
        bool,
        "Retry storing a result while the store is unreachable (Celery's default is False).",
    ),
    Setting("result_backend_max_retries", float("inf"), NUMBER, "Store retries at most."),
    Setting("result_backend_base_sleep_between_retries_ms", 10, NUMBER, "First pause of a retry."),
    Setting("result_backend_max_sleep_between_retries_ms", 10000, NUMBER, "Longest retry pause."),
    # tasks
    Setting("task_serializer", "json", str, "Serializer for task messages."),
    Setting("accept_content", ["json"], SEQUENCE, "Content types a worker accepts."),
    Setting("task_compression", None, OPTIONAL_STR, "Compression for task messages."),
    Setting("task_protocol", 2, int, "Task message protocol version sent."),
    Setting("task_default_queue", "celery", str, "Queue for tasks without a route."),
    Setting("task_default_exchange", None, OPTIONAL_STR, "Exchange; defaults to the queue."),
    Setting("task_default_exchange_type", "direct", str, "Type of the default exchange."),
    Setting("task_default_routing_key", None, OPTIONAL_STR, "Routing key; defaults to queue."),
    Setting("task_default_priority", None, (int, type(None)), "Priority when none is given."),
    Setting("task_default_delivery_mode", 2, (int, str), "2/'persistent' or 1/'transient'."),
    Setting("task_default_rate_limit", None, OPTIONAL_STR, "Rate limit for every task."),
    Setting("task_queues", None, (list, tuple, dict, type(None)), "Queues workers consume."),
    Setting("task_routes", None, (list, tuple, dict, type(None)), "Routes: name -> queue."),
    Setting("task_create_missing_queues", True, bool, "Create queues named in routes."),
    Setting("task_always_eager", False, bool, "Run tasks locally on apply_async."),
    Setting("task_eager_propagates", False, bool, "Eager tasks re-raise their errors."),
    Setting("task_store_eager_result", False, bool, "Store results of eager tasks."),
    Setting("task_ignore_result", False, bool, "Store no results by default."),
    Setting("task_store_errors_even_if_ignored", False, bool, "Store errors when ignoring."),
    Setting("task_track_started", False, bool, "Store STARTED when a task begins."),
    Setting("task_acks_late", False, bool, "Acknowledge after the task ran."),
    Setting("task_acks_on_failure_or_timeout", True, bool, "Late-ack failed tasks too."),
    Setting("task_reject_on_worker_lost", False, bool, "Requeue when the child dies."),
    Setting("task_time_limit", None, OPTIONAL_NUMBER, "Hard time limit in seconds."),
    Setting("task_soft_time_limit", None, OPTIONAL_NUMBER, "Soft time limit in seconds."),
    Setting("task_publish_retry", True, bool, "Retry publishing on connection errors."),
    Setting("task_publish_retry_policy", DEFAULT_PUBLISH_RETRY_POLICY, dict, "Publish retries."),
    Setting("task_send_sent_event", False, bool, "Send a task-sent event per publish."),
    Setting(
        "task_annotations",
        None,
        None,
        "Task attributes to rewrite: a dict by task name, an annotation object, its import"
        " path, or a list of these.",
    ),
    Setting("task_max_deliveries", 10, (int, type(None)), "Dead-letter after this many."),
    Setting("task_remote_tracebacks", False, bool, "Show the worker's traceback on get()."),
    Setting("task_inherit_parent_priority", False, bool, "Children inherit priority."),
    Setting("task_queue_max_priority", None, (int, type(None)), "AMQP x-max-priority."),
    Setting("task_default_queue_type", "classic", str, "AMQP queue type: classic or quorum."),
    # worker
    Setting("worker_concurrency", None, (int, type(None)), "Pool size; none means CPU count."),
    Setting("worker_prefetch_multiplier", 4, int, "Messages held per pool slot."),
    Setting("worker_pool", "prefork", str, "solo, threads or prefork."),
    Setting("worker_max_tasks_per_child", None, (int, type(None)), "Replace after N tasks."),
    Setting("worker_max_memory_per_child", None, (int, type(None)), "Replace above N KiB."),
    Setting(
        "worker_max_message_size",
        64 * 1024 * 1024,
        (int, type(None)),
        "Bytes a task body may have, compressed or not; larger ones are dead-lettered.",
    ),
    Setting("worker_send_task_events", False, bool, "Send task events (-E)."),
    Setting("worker_hijack_root_logger", True, bool, "Configure the root logger."),
    Setting(
        "worker_log_format",
        "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
        str,
        "Log line format.",
    ),
    Setting(
        "worker_task_log_format",
        "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s",
        str,
        "Log line format inside tasks.",
    ),
    Setting("worker_log_color", None, (bool, type(None)), "Colour log lines."),
    Setting("worker_redirect_stdouts", True, bool, "Send print() to the log."),
    Setting("worker_redirect_stdouts_level", "WARNING", str, "Level for redirected output."),
    Setting("worker_disable_rate_limits", False, bool, "Ignore rate limits."),
    Setting("worker_lost_wait", 10.0, NUMBER, "Seconds to wait for a lost child's result."),
    Setting("worker_proc_alive_timeout", 4.0, NUMBER, "Seconds a child may take to start."),
    Setting("worker_enable_remote_control", True, bool, "Answer remote control commands."),
    Setting("worker_state_db", None, OPTIONAL_STR, "File keeping revoked ids."),
    Setting(
        "worker_revoke_expires",
        environment_number("CELERY_WORKER_REVOKE_EXPIRES", 10800.0),
        NUMBER,
        "Seconds a revoke is remembered.",
    ),
    Setting("worker_timer_precision", 1.0, NUMBER, "Seconds between timer checks."),
    Setting("worker_heartbeat_interval", 2.0, NUMBER, "Seconds between worker heartbeats."),
    # events and control
    Setting("event_serializer", "json", str, "Serializer for events."),
    Setting("event_exchange", "celeryev", str, "Exchange events go to."),
    Setting("event_queue_prefix", "celeryev", str, "Prefix of event queue names."),
    Setting("event_queue_ttl", 5.0, OPTIONAL_NUMBER, "Event message TTL in seconds."),
    Setting("event_queue_expires", 60.0, OPTIONAL_NUMBER, "Event queue expiry in seconds."),
    Setting("control_exchange", "celery", str, "Prefix of the control exchange."),
    Setting("control_queue_ttl", 300.0, OPTIONAL_NUMBER, "Control message TTL."),
    Setting("control_queue_expires", 10.0, OPTIONAL_NUMBER, "Control queue expiry."),
    # security: message signing, set up by app.setup_security() (celeriac.security)
    Setting("security_key", None, OPTIONAL_STR, "PEM file of the RSA key that signs (auth)."),
    Setting("security_key_password", None, OPTIONAL_SECRET, "Password of security_key."),
    Setting("security_certificate", None, OPTIONAL_STR, "PEM file of security_key's certificate."),
    Setting("security_cert_store", None, OPTIONAL_STR, "Folder or glob of trusted certificates."),
    Setting("security_digest", "sha256", str, "Hash used in message signatures."),
    Setting(
        "security_hmac_key",
        None,
        OPTIONAL_SECRET,
        "Shared secret of the hmac serializer, 32 bytes or more (celeriac's own).",
    ),
    Setting(
        "security_max_age",
        3600.0,
        OPTIONAL_NUMBER,
        "Seconds after signing (or its eta) a task message is refused; none: never"
        " (celeriac's own).",
    ),
    # beat
    Setting("beat_schedule", {}, dict, "Periodic tasks."),
    Setting(
        "beat_scheduler",
        "celeriac.beat:PersistentScheduler",
        str,
        "Celery's PersistentScheduler, by either package's name; the one celeriac has.",
    ),
    Setting(
        "beat_schedule_filename",
        "celerybeat-schedule",
        str,
        "Local file of last runs, when neither broker nor result store can hold them.",
    ),
    Setting("beat_max_loop_interval", 0, NUMBER, "Longest sleep between checks; 0 means 300 s."),
    Setting(
        "beat_cron_starting_deadline",
        None,
        OPTIONAL_NUMBER,
        "Seconds a missed crontab run may be late and still be sent; none: always sent.",
    ),
    Setting(
        "beat_sync_every",
        0,
        int,
        "Accepted for Celery compatibility; no effect: each run is stored as it is claimed.",
    ),
    Setting(
        "beat_lease_seconds",
        3.0,
        NUMBER,
        "How long a beat leads without renewing; a standby beat takes over after it.",
    ),
    # time and modules
    Setting("timezone", None, OPTIONAL_STR, "Time zone name; none means UTC."),
    Setting("enable_utc", True, bool, "Use UTC for dates in messages."),
    Setting("imports", (), SEQUENCE, "Modules to import when the worker starts."),
    Setting("include", (), SEQUENCE, "More modules to import after imports."),
)

DEFAULTS: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}

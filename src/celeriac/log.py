"""Loggers, the task-aware formatter, URL redaction and the worker's logging setup (core).

Importing this module installs no handler: ``setup_logging`` does, once a worker asks,
following Celery's rule that a connected ``setup_logging`` receiver takes over logging
entirely. Records of task loggers carry ``task_name`` and ``task_id`` of the task
running in the thread that logged them (``"???"`` outside a task), so the
``worker_task_log_format`` fields always resolve.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import socket
import sys
from typing import TYPE_CHECKING, Final

from celeriac import signals
from celeriac.current import get_current_task
from celeriac.transports import redact_url

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = [
    "TASK_LOGGER_NAME",
    "ColorFormatter",
    "RedactingFilter",
    "TaskContextFilter",
    "TaskFormatter",
    "get_logger",
    "get_task_logger",
    "node_format",
    "redact_urls",
    "setup_logging",
]

TASK_LOGGER_NAME: Final = "celeriac.task"
UNKNOWN: Final = "???"
DEFAULT_NODE_NAME: Final = "celeriac"
RESERVED_LOGGER_NAMES: Final = frozenset({"celeriac", TASK_LOGGER_NAME, "celery", "celery.task"})

# A URL up to the next blank or quote: ``redact_url`` then finds its password, even one
# holding an unescaped "@", because it splits the userinfo at the token's last "@".
_URL_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")

_LEVEL_COLORS: Final = {
    logging.DEBUG: "\033[34m",
    logging.WARNING: "\033[33m",
    logging.ERROR: "\033[31m",
    logging.CRITICAL: "\033[35m",
}
_RESET_COLOR: Final = "\033[0m"


def get_logger(name: str) -> logging.Logger:
    """Return the logger called ``name`` (Celery's ``celery.utils.log.get_logger``)."""
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    """Return a logger for task code whose records name the running task.

    The logger keeps ``name`` and is made a child of the ``celeriac.task`` logger, as
    Celery does, so the worker's task handler and format apply to it.

    Raises:
        RuntimeError: ``name`` is one of the worker's own logger names.
    """
    if name in RESERVED_LOGGER_NAMES:
        raise RuntimeError(f"Logger name {name!r} is reserved!")
    logger = logging.getLogger(name)
    logger.parent = _task_logger()
    if not any(isinstance(existing, TaskContextFilter) for existing in logger.filters):
        logger.addFilter(TaskContextFilter())
    return logger


def _task_logger() -> logging.Logger:
    """Return the parent of every task logger, with its context filter attached."""
    logger = logging.getLogger(TASK_LOGGER_NAME)
    if not any(isinstance(existing, TaskContextFilter) for existing in logger.filters):
        logger.addFilter(TaskContextFilter())
    return logger


def redact_urls(text: str) -> str:
    """Mask the password of every ``scheme://user:password@host`` URL in ``text``."""
    if "://" not in text:
        return text
    return _URL_TOKEN.sub(lambda match: redact_url(match.group(0)), text)


def node_format(template: str, nodename: str) -> str:
    """Expand Celery's node placeholders in a file name such as a log or pid file.

    ``%p`` is the full node name (``w1@example.com``), ``%n`` its name part (``w1``),
    ``%h`` its host (``example.com``), ``%d`` the host's domain (``com``) and ``%%`` a
    percent sign. The pool process index is that of the main process (``%i`` is ``0``,
    ``%I`` empty): a celeriac worker's pool processes log into its main process's file.
    Other placeholders are left as they are.
    """
    name, at, host = nodename.partition("@")
    if not at:
        name, host = DEFAULT_NODE_NAME, nodename
    host = host or socket.gethostname()
    values = {
        "p": nodename,
        "n": name,
        "h": host,
        "d": host.partition(".")[2],
        "i": "0",
        "I": "",
        "%": "%",
    }
    return re.sub(r"%(.)", lambda match: values.get(match.group(1), match.group(0)), template)


def _set_task_fields(record: logging.LogRecord) -> None:
    task = get_current_task()
    if task is None:
        record.__dict__.setdefault("task_name", UNKNOWN)
        record.__dict__.setdefault("task_id", UNKNOWN)
    else:
        record.task_name = task.name or UNKNOWN
        record.task_id = task.request.id or UNKNOWN


class TaskContextFilter(logging.Filter):
    """Set ``task_name`` and ``task_id`` on each record from the task running now."""

    def filter(self, record: logging.LogRecord) -> bool:
        _set_task_fields(record)
        return True


class RedactingFilter(logging.Filter):
    """Mask URL passwords in a record's message and traceback before any handler writes it.

    Attach it to a handler, where it sees the records of every logger below it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A bad format/argument pair: leave the record to the handler's error path.
            return True
        redacted = redact_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_urls(record.exc_text)
        return True


class ColorFormatter(logging.Formatter):
    """A formatter that colours each line by level on a terminal."""

    def __init__(self, fmt: str | None = None, use_color: bool = True) -> None:
        super().__init__(fmt)
        self.use_color = use_color

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        color = _LEVEL_COLORS.get(record.levelno) if self.use_color else None
        return f"{color}{line}{_RESET_COLOR}" if color else line


class TaskFormatter(ColorFormatter):
    """The task log formatter: ``%(task_name)s`` and ``%(task_id)s`` always resolve."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "task_name") or not hasattr(record, "task_id"):
            _set_task_fields(record)
        return super().format(record)


def _level(loglevel: int | str | None) -> int:
    """Turn ``"info"``, ``"INFO"``, ``"FATAL"``, ``"20"`` or ``20`` into a level number."""
    if loglevel is None:
        return logging.WARNING
    if isinstance(loglevel, int):
        return loglevel
    name = loglevel.strip().upper()
    if name.isdigit():
        return int(name)
    level = logging.getLevelNamesMapping().get(name)
    if level is None:
        raise ValueError(f"unknown log level {loglevel!r}")
    return level


def _make_handler(logfile: str | None, formatter: logging.Formatter) -> logging.Handler:
    handler: logging.Handler
    if logfile:
        # Watched so that logrotate's moved files are reopened, as with Celery.
        handler = logging.handlers.WatchedFileHandler(logfile, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    return handler


def _has_handlers(logger: logging.Logger) -> bool:
    return any(not isinstance(handler, logging.NullHandler) for handler in logger.handlers)


def _drop_handlers(logger: logging.Logger) -> None:
    # Removed, not closed: a handler may still serve another logger.
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


def setup_logging(
    app: Celeriac,
    loglevel: int | str | None,
    logfile: str | None = None,
    format: str | None = None,
    colorize: bool | None = None,
    hostname: str | None = None,
) -> None:
    """Configure logging for a worker, or leave it to the ``setup_logging`` receivers.

    With a receiver connected to ``signals.setup_logging``, it is sent and nothing else
    is touched (Celery's rule). Otherwise the root logger gets a handler writing
    ``worker_log_format`` lines (its old handlers are dropped first when
    ``worker_hijack_root_logger`` is on; when off, a root logger that already has a
    handler is left alone), the ``celeriac.task`` logger gets its own handler writing
    ``worker_task_log_format`` lines, and ``after_setup_logger`` and
    ``after_setup_task_logger`` are sent.

    Args:
        loglevel: a level name (any case, ``FATAL`` included) or number.
        logfile: a file to write to instead of stderr; ``hostname`` (the node name)
            expands its ``%n``/``%h``/``%d``/``%p`` placeholders.
        format: the line format for non-task loggers; ``worker_log_format`` if None.
        colorize: colour the lines; if None, ``worker_log_color``, else whether stderr
            is a terminal (never for a log file).
    """
    level = _level(loglevel)
    conf = app.conf
    if logfile and hostname:
        logfile = node_format(logfile, hostname)
    format = format or conf.worker_log_format
    if colorize is None:
        colorize = conf.worker_log_color
    if colorize is None:
        colorize = not logfile and sys.stderr.isatty()
    if signals.setup_logging.has_listeners():
        signals.setup_logging.send(
            sender=None, loglevel=level, logfile=logfile, format=format, colorize=colorize
        )
        return
    root = logging.getLogger()
    task_logger = _task_logger()
    if conf.worker_hijack_root_logger:
        _drop_handlers(root)
        _drop_handlers(task_logger)
    if not _has_handlers(root):
        root.addHandler(_make_handler(logfile, ColorFormatter(format, use_color=colorize)))
    root.setLevel(level)
    signals.after_setup_logger.send(
        sender=None, logger=root, loglevel=level, logfile=logfile, format=format, colorize=colorize
    )
    task_format = conf.worker_task_log_format
    if not _has_handlers(task_logger):
        task_logger.addHandler(
            _make_handler(logfile, TaskFormatter(task_format, use_color=colorize))
        )
    task_logger.setLevel(level)
    task_logger.propagate = False
    signals.after_setup_task_logger.send(
        sender=None,
        logger=task_logger,
        loglevel=level,
        logfile=logfile,
        format=task_format,
        colorize=colorize,
    )

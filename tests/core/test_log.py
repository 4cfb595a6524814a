"""Loggers, the task formatter, URL redaction and setup_logging with its signals."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, signals
from celeriac.dispatch import Signal
from celeriac.log import (
    TASK_LOGGER_NAME,
    RedactingFilter,
    TaskFormatter,
    get_logger,
    get_task_logger,
    node_format,
    redact_urls,
    setup_logging,
)

SIGNAL_KWARGS = {"signal", "sender", "logger", "loglevel", "logfile", "format", "colorize"}


class ListHandler(logging.Handler):
    """Keep every record it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("logtest", broker="memory://logtest", set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put the root and task loggers back as they were; close handlers the test added."""
    loggers = [logging.getLogger(), logging.getLogger(TASK_LOGGER_NAME)]
    saved = [(list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        for handler in list(logger.handlers):
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


class Receiver:
    """A signal receiver that keeps the keyword arguments of each send."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


@pytest.fixture
def connect() -> Iterator[Any]:
    """Connect a fresh Receiver to a signal; disconnected after the test."""
    connected: list[tuple[Signal, Receiver]] = []

    def connect_receiver(signal: Signal) -> Receiver:
        receiver = Receiver()
        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
        return receiver

    yield connect_receiver
    for signal, receiver in connected:
        signal.disconnect(receiver)


# ---- loggers --------------------------------------------------------------------------


def test_task_logger_records_carry_the_running_task_name_and_id(app: Celeriac) -> None:
    logger = get_task_logger("tests.core.log_tasks")
    handler = ListHandler()
    logger.addHandler(handler)

    @app.task
    def work() -> int:
        logger.warning("inside")
        return 1

    try:
        work.apply(task_id="task-id-1")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)

    inside, outside = handler.records
    assert (vars(inside)["task_name"], vars(inside)["task_id"]) == (work.name, "task-id-1")
    assert (vars(outside)["task_name"], vars(outside)["task_id"]) == ("???", "???")


def test_task_logger_keeps_its_name_under_the_task_logger() -> None:
    logger = get_task_logger("tests.core.named")

    assert logger.name == "tests.core.named"
    assert logger.parent is logging.getLogger(TASK_LOGGER_NAME)
    assert get_logger("tests.core.named") is logger


@pytest.mark.parametrize("name", ["celeriac", "celeriac.task", "celery", "celery.task"])
def test_task_logger_refuses_reserved_names(name: str) -> None:
    with pytest.raises(RuntimeError, match="reserved"):
        get_task_logger(name)


def test_task_formatter_fills_the_task_fields_outside_a_task() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)

    line = TaskFormatter("%(task_name)s[%(task_id)s]: %(message)s", use_color=False).format(record)

    assert line == "???[???]: hello world"


def test_celery_utils_log_import_path_gives_the_same_functions() -> None:
    from celeriac.utils.log import get_logger as compat_get_logger
    from celeriac.utils.log import get_task_logger as compat_get_task_logger

    assert compat_get_task_logger is get_task_logger
    assert compat_get_logger is get_logger


# ---- redaction ------------------------------------------------------------------------


def test_redact_urls_masks_every_password_and_leaves_other_urls() -> None:
    text = "from redis://:s3cret@cache:6379/0 to amqp://guest:pw@rabbit// via sqlite:///tmp/b.db"

    assert redact_urls(text) == (
        "from redis://:****@cache:6379/0 to amqp://guest:****@rabbit// via sqlite:///tmp/b.db"
    )


def test_redacting_filter_masks_passwords_in_arguments_and_tracebacks() -> None:
    try:
        raise ConnectionError("cannot reach redis://user:s3cret@cache/0")
    except ConnectionError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "broker %s", ("redis://user:s3cret@cache/0",), exc_info
    )

    kept = RedactingFilter().filter(record)
    line = logging.Formatter("%(message)s").format(record)

    assert kept
    assert "s3cret" not in line
    assert line.startswith("broker redis://user:****@cache/0\nTraceback")
    assert line.endswith("ConnectionError: cannot reach redis://user:****@cache/0")


def test_node_format_expands_the_node_placeholders() -> None:
    template = "%n-%h-%d-%p-%%-%i-%x%I.log"

    assert node_format(template, "w1@example.com") == "w1-example.com-com-w1@example.com-%-0-%x.log"
    assert node_format("%n@%h", "host.lan") == "celeriac@host.lan"


# ---- setup_logging --------------------------------------------------------------------


@pytest.mark.usefixtures("restored_logging")
def test_a_setup_logging_receiver_takes_over_and_nothing_is_configured(
    app: Celeriac, connect: Any
) -> None:
    receiver = connect(signals.setup_logging)
    after = connect(signals.after_setup_logger)
    root_handlers = list(logging.getLogger().handlers)

    setup_logging(app, "fatal", colorize=False)

    [call] = receiver.calls
    assert call == {
        "signal": signals.setup_logging,
        "sender": None,
        "loglevel": logging.CRITICAL,
        "logfile": None,
        "format": app.conf.worker_log_format,
        "colorize": False,
    }
    assert logging.getLogger().handlers == root_handlers
    assert after.calls == []


@pytest.mark.usefixtures("restored_logging")
def test_setup_logging_configures_both_loggers_and_sends_the_after_setup_signals(
    app: Celeriac, connect: Any, tmp_path: Path
) -> None:
    logfile = tmp_path / "worker.log"
    after_logger = connect(signals.after_setup_logger)
    after_task_logger = connect(signals.after_setup_task_logger)

    setup_logging(app, "info", logfile=str(logfile))

    [root_call] = after_logger.calls
    [task_call] = after_task_logger.calls
    assert set(root_call) == SIGNAL_KWARGS
    assert set(task_call) == SIGNAL_KWARGS
    assert root_call["logger"] is logging.getLogger()
    assert task_call["logger"] is logging.getLogger(TASK_LOGGER_NAME)
    assert root_call["loglevel"] == task_call["loglevel"] == logging.INFO
    assert root_call["logfile"] == task_call["logfile"] == str(logfile)
    assert root_call["format"] == app.conf.worker_log_format
    assert task_call["format"] == app.conf.worker_task_log_format
    assert root_call["colorize"] is task_call["colorize"] is False


@pytest.mark.usefixtures("restored_logging")
def test_configured_logging_writes_task_lines_and_masks_passwords(
    app: Celeriac, tmp_path: Path
) -> None:
    logfile = tmp_path / "worker.log"
    logger = get_task_logger("tests.core.log_file_tasks")

    @app.task
    def work() -> None:
        logger.info("working")

    setup_logging(app, "INFO", logfile=str(logfile), hostname="w1@example.com")
    work.apply(task_id="task-id-2")
    logging.getLogger("tests.core.plain").info("broker is redis://:s3cret@cache/0")
    for handler in logging.getLogger().handlers + logging.getLogger(TASK_LOGGER_NAME).handlers:
        handler.flush()

    lines = logfile.read_text().splitlines()
    assert any(line.endswith(f"{work.name}[task-id-2]: working") for line in lines)
    assert any(line.endswith("] broker is redis://:****@cache/0") for line in lines)
    assert "s3cret" not in logfile.read_text()


@pytest.mark.usefixtures("restored_logging")
def test_logfile_name_expands_the_node_name(app: Celeriac, tmp_path: Path) -> None:
    setup_logging(app, "INFO", logfile=str(tmp_path / "%n.log"), hostname="w7@example.com")

    assert (tmp_path / "w7.log").exists()


@pytest.mark.usefixtures("restored_logging")
def test_without_hijack_a_root_logger_with_a_handler_is_left_alone(app: Celeriac) -> None:
    app.conf.worker_hijack_root_logger = False
    root = logging.getLogger()
    root.addHandler(ListHandler())
    handlers = list(root.handlers)

    setup_logging(app, "debug", colorize=False)

    assert root.handlers == handlers
    assert root.level == logging.DEBUG


def test_an_unknown_log_level_is_refused(app: Celeriac) -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        setup_logging(app, "loud")

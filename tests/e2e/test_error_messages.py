"""Errors that say what to do, met by real processes: a broker or result-store URL whose
extra is not installed (in a Python that lacks it), arguments and a return value the
serializer cannot encode, a message refused for its content type or for an unknown task
(the caller's ``get()`` fails at once with the reason), a broker that refuses the
credentials or the database (the worker stops at once instead of retrying), and
``celeriac result`` of an id nobody knows."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import pytest

import celeriac
from celeriac import Celeriac
from celeriac.exceptions import (
    ContentDisallowed,
    EncodeError,
    NotRegistered,
    SerializationError,
)
from celeriac.transports.base import BrokerRefused
from tests.e2e.conftest import (
    Broker,
    WorkerProcess,
    launch_worker,
    run_celeriac,
    wait_for,
)
from tests.servers import SERVERS, private_redis, require

pytestmark = pytest.mark.slow
SQLITE_ONLY = pytest.mark.parametrize("broker", ["sqlite"], indirect=True)
StartWorker = Callable[..., WorkerProcess]

# ---- a URL whose extra is not installed ---------------------------------------------

NO_EXTRA_APP = """
from celeriac import Celeriac

app = Celeriac("noextra", broker={broker!r}, backend={backend!r})


@app.task
def add(x, y):
    return x + y
"""

MISSING_EXTRAS = [
    pytest.param(
        "redis://127.0.0.1:6379/0",
        None,
        "The broker redis://127.0.0.1:6379/0 needs the 'redis' package, which is not"
        " installed: pip install 'celeriac[redis]'",
        id="redis-broker",
    ),
    pytest.param(
        "amqp://guest:s3cret@127.0.0.1:5672//",
        None,
        "The broker amqp://guest:****@127.0.0.1:5672// needs the 'amqp' package, which is not"
        " installed: pip install 'celeriac[amqp]'",
        id="amqp-broker",
    ),
    pytest.param(
        None,
        "postgresql://postgres@127.0.0.1:5432/test",
        "The result backend postgresql://postgres@127.0.0.1:5432/test needs the 'psycopg'"
        " package, which is not installed: pip install 'celeriac[postgres]'",
        id="postgresql-results",
    ),
]


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with celeriac and click and nothing else: a virtual environment made
    without pip, finding celeriac's source and click through the site folder."""
    folder = tmp_path_factory.mktemp("bare-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    [site] = (folder / "lib").glob("python*/site-packages")
    (site / "celeriac-source.pth").write_text(str(Path(celeriac.__file__).parent.parent) + "\n")
    (site / "click").symlink_to(Path(click.__file__).parent)
    python = folder / "bin" / "python"
    probe = (
        "import importlib.util as u; print([u.find_spec(m) for m in ('redis', 'amqp', 'psycopg')])"
    )
    lacking = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert lacking.stdout.strip() == "[None, None, None]"
    return python


def run_bare(
    python: Path, folder: Path, broker: str | None, backend: str | None, *arguments: str
) -> subprocess.CompletedProcess[str]:
    (folder / "noextra.py").write_text(NO_EXTRA_APP.format(broker=broker, backend=backend))
    return subprocess.run(
        [python, *arguments],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(("broker_url", "backend_url", "message"), MISSING_EXTRAS)
@pytest.mark.parametrize("command", ["call", "worker"])
def test_a_missing_extra_is_one_line_naming_it(
    bare_python: Path,
    tmp_path: Path,
    broker_url: str | None,
    backend_url: str | None,
    message: str,
    command: str,
) -> None:
    arguments = ["call", "noextra.add", "--args", "[1, 2]"] if command == "call" else ["worker"]
    celeriac_command = ["-m", "celeriac", "-A", "noextra", *arguments]

    completed = run_bare(bare_python, tmp_path, broker_url, backend_url, *celeriac_command)

    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [f"Error: {message}"]
    assert "s3cret" not in completed.stdout + completed.stderr


def test_a_missing_extra_in_python_code_is_raised_without_the_import_error(
    bare_python: Path, tmp_path: Path
) -> None:
    program = "import noextra; noextra.add.delay(1, 2)"

    completed = run_bare(bare_python, tmp_path, "redis://127.0.0.1:6379/0", None, "-c", program)

    assert completed.returncode == 1
    assert completed.stderr.splitlines()[-1] == (
        "celeriac.exceptions.ImproperlyConfigured: The broker redis://127.0.0.1:6379/0 needs"
        " the 'redis' package, which is not installed: pip install 'celeriac[redis]'"
    )
    assert "ModuleNotFoundError" not in completed.stderr


# ---- values the serializer cannot encode --------------------------------------------


@SQLITE_ONLY
def test_an_unencodable_argument_names_the_task_the_type_and_the_setting(
    start_worker: StartWorker, client: Celeriac
) -> None:
    start_worker()

    with pytest.raises(EncodeError) as raised:
        client.send_task("sigproj.add", (object(), 1))

    assert isinstance(raised.value, SerializationError)
    message = str(raised.value)
    assert message.startswith("Cannot send task sigproj.add: its arguments hold a value")
    assert "(Object of type object is not JSON serializable)" in message
    assert "task_serializer" in message
    assert client.send_task("sigproj.add", (1, 1)).get(timeout=10) == 2


@SQLITE_ONLY
def test_an_unencodable_return_value_is_a_task_failure_logged_at_error(
    start_worker: StartWorker, client: Celeriac
) -> None:
    worker = start_worker()

    result = client.send_task("sigproj.unserializable")

    with pytest.raises(EncodeError, match="result_serializer") as raised:
        result.get(timeout=10)
    assert str(raised.value).startswith(
        "Task sigproj.unserializable returned a value the json serializer cannot encode"
        " (Object of type object is not JSON serializable)."
    )
    meta = client.backend.get(result.id)
    assert meta is not None
    assert meta["result"]["exc_module"] == "kombu.exceptions"
    assert wait_for(lambda: f"sigproj.unserializable[{result.id}] raised" in worker.log())
    log = worker.log()
    assert f"] Task sigproj.unserializable[{result.id}] raised unexpected: EncodeError(" in log
    assert "ERROR/ForkPoolWorker-" in log
    assert "CRITICAL" not in log
    assert "Internal error" not in log


# ---- messages the worker refuses ----------------------------------------------------


@SQLITE_ONLY
def test_a_pickled_message_is_refused_and_get_fails_at_once_with_the_fix(
    start_worker: StartWorker, client: Celeriac
) -> None:
    worker = start_worker()
    started = time.monotonic()

    result = client.send_task("sigproj.add", (1, 2), serializer="pickle")

    with pytest.raises(ContentDisallowed) as raised:
        result.get(timeout=20)
    assert time.monotonic() - started < 5
    assert str(raised.value) == (
        "Refusing to deserialize untrusted content of type pickle"
        " (application/x-python-serialize): add 'pickle' to the worker's accept_content to"
        " run it, or send the task with a serializer the worker accepts (json)"
    )
    assert wait_for(lambda: f"Rejecting task sigproj.add[{result.id}]" in worker.log())
    line = next(line for line in worker.log().splitlines() if "Rejecting task" in line)
    assert "ERROR/MainProcess" in line
    assert "add 'pickle' to the worker's accept_content" in line
    assert "dead-lettered to 'celery.dead_letter'" in line


@SQLITE_ONLY
def test_an_unknown_task_is_refused_naming_its_id_and_how_to_import_it(
    start_worker: StartWorker, client: Celeriac
) -> None:
    worker = start_worker()
    started = time.monotonic()

    result = client.send_task("sigproj.not_here", (1,))

    with pytest.raises(NotRegistered) as raised:
        result.get(timeout=20)
    assert time.monotonic() - started < 5
    assert str(raised.value).startswith(
        "Task of kind 'sigproj.not_here' never registered, please make sure it's imported."
    )
    assert "-I/--include" in str(raised.value)
    assert wait_for(lambda: "Received unregistered task" in worker.log())
    line = next(line for line in worker.log().splitlines() if "unregistered task" in line)
    assert f"'sigproj.not_here' (id {result.id})" in line
    assert "Start the worker with -A naming the module that defines the task" in line
    assert "the include setting" in line


# ---- brokers that refuse ----------------------------------------------------------


def run_refused_worker(url: str, folder: Path) -> tuple[int, float, str]:
    """Run a worker on ``url``; return its exit code, how long it ran and its output."""
    started = time.monotonic()
    worker = launch_worker("sigproj", Broker(url), folder, "refused")
    try:
        exitcode = worker.process.wait(timeout=20)
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=10)
    return exitcode, time.monotonic() - started, worker.log()


def assert_refused_at_once(
    exitcode: int, elapsed: float, log: str, shown_url: str, reason: str
) -> None:
    assert exitcode == 1
    assert elapsed < 5
    [line] = [line for line in log.splitlines() if "Cannot connect" in line]
    assert f"CRITICAL/MainProcess] consumer: Cannot connect to {shown_url}: " in line
    assert line.endswith(f"{reason}. Not retrying: waiting will not change the broker's answer.")
    assert line.count(shown_url) == 1
    assert "Trying again" not in log


def test_rabbitmq_refusing_the_password_stops_the_worker_at_once(tmp_path: Path) -> None:
    require("rabbitmq")
    server = SERVERS["rabbitmq"]
    url = f"amqp://guest:wrong-password@{server.host}:{server.port}//"

    exitcode, elapsed, log = run_refused_worker(url, tmp_path)

    assert_refused_at_once(
        exitcode,
        elapsed,
        log,
        f"amqp://guest:****@{server.host}:{server.port}//",
        "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN. For"
        " details see the broker logfile; check the user name and password in the URL",
    )
    assert "wrong-password" not in log


def test_rabbitmq_refusing_the_password_fails_a_client_at_once() -> None:
    require("rabbitmq")
    server = SERVERS["rabbitmq"]
    app = Celeriac("refused", broker=f"amqp://guest:nope@{server.host}:{server.port}//")
    started = time.monotonic()

    with pytest.raises(BrokerRefused, match="ACCESS_REFUSED"):
        app.send_task("sigproj.add", (1, 2))

    assert time.monotonic() - started < 5
    app.close()


@pytest.mark.parametrize(
    ("credentials", "database", "reason"),
    [
        pytest.param(
            ":wrong-password@",
            0,
            "invalid username-password pair or user is disabled; check the user name and"
            " password in the URL",
            id="wrong-password",
        ),
        pytest.param(
            "",
            0,
            # The server's words depend on the protocol redis-py speaks (AUTH or HELLO).
            "; check the user name and password in the URL",
            id="no-password",
        ),
        pytest.param(
            ":s3cret@",
            99,
            "DB index is out of range; the server has fewer databases, check the number at"
            " the end of the URL",
            id="database-out-of-range",
        ),
    ],
)
def test_redis_refusing_the_connection_stops_the_worker_at_once(
    tmp_path: Path, credentials: str, database: int, reason: str
) -> None:
    with private_redis(tmp_path, password="s3cret") as server:
        url = f"redis://{credentials}127.0.0.1:{server.port}/{database}"
        shown = url.replace("wrong-password", "****").replace("s3cret", "****")

        exitcode, elapsed, log = run_refused_worker(url, tmp_path)

    assert_refused_at_once(exitcode, elapsed, log, shown, reason)
    assert "wrong-password" not in log
    assert "s3cret" not in log


# ---- `celeriac result` of an id nobody knows ---------------------------------------


@SQLITE_ONLY
def test_result_of_an_unknown_id_says_pending_and_waits_only_with_timeout(
    broker: Broker, tmp_path: Path
) -> None:
    def result(*arguments: str) -> subprocess.CompletedProcess[str]:
        return run_celeriac(broker, tmp_path, "result", *arguments)

    started = time.monotonic()
    at_once = result("no-such-id")
    elapsed = time.monotonic() - started
    waited = result("no-such-id", "--timeout", "0.5")

    assert elapsed < 5
    assert at_once.returncode == 1
    assert at_once.stderr.splitlines() == [
        "Error: task no-such-id is PENDING: no worker has reported on it yet, or the id is"
        " unknown to the result store. Give --timeout SECONDS to wait for its result."
    ]
    assert waited.returncode == 1
    assert waited.stderr.splitlines() == [
        "Error: task no-such-id is not ready after 0.5 s (state PENDING)"
    ]

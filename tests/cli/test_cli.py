"""The ``celeriac`` command run for real: ``python -m celeriac`` processes on a SQLite broker.

Each test writes a tiny project (a tasks module and a settings module) into tmp_path,
runs the command there, and checks what it printed and what reached the broker through
an app in the test process that shares the same SQLite file.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac import Celeriac, __version__, states
from celeriac.cli.app_loading import AppNotFound, find_app
from celeriac.protocol.result_meta import build_meta

TASKS_MODULE = """
import json
import os

import click

from celeriac import Celeriac, signals

app = Celeriac("cliproj")
app.user_options["preload"].add(click.Option(["--stage"], default="dev"))


@app.task
def add(x, y):
    return x + y


@signals.user_preload_options.connect
def remember_preload_options(sender, app, options, **kwargs):
    path = os.environ.get("PRELOAD_LOG")
    if path:
        with open(path, "w") as file:
            json.dump({"sender": sender.name, "app": app.main, "options": options}, file)
"""

SETTINGS_MODULE = """
task_queues = ["celery", "images"]
"""

CLEARED_ENVIRONMENT = (
    "APP",
    "BROKER_URL",
    "RESULT_BACKEND",
    "CONFIG_MODULE",
    "CELERIAC_BROKER_URL",
    "CELERY_BROKER_URL",
    "CELERIAC_RESULT_BACKEND",
    "CELERY_RESULT_BACKEND",
)

RunCLI = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "cliproj.py").write_text(TASKS_MODULE)
    (directory / "cliconfig.py").write_text(SETTINGS_MODULE)
    return directory


@pytest.fixture
def broker_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'b.db'}"


@pytest.fixture
def client(broker_url: str) -> Iterator[Celeriac]:
    """An app in the test process on the same SQLite file as the command."""
    app = Celeriac("client", broker=broker_url, set_as_current=False)
    yield app
    app.close()


def command_environment(**extra: str) -> dict[str, str]:
    environment = {
        name: value for name, value in os.environ.items() if name not in CLEARED_ENVIRONMENT
    }
    environment.update(extra)
    return environment


@pytest.fixture
def run(project: Path) -> RunCLI:
    """Run ``python -m celeriac ARGS`` in the project directory; killed if it overruns."""

    def run_cli(
        *args: str, stdin: str | None = None, **environment: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celeriac", *args],
            cwd=project,
            env=command_environment(**environment),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    return run_cli


# ---- finding the app (in this process) -------------------------------------------------

APP_LINE = "from celeriac import Celeriac\n{name} = Celeriac({main!r}, set_as_current=False)\n"


@pytest.fixture
def source_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory to write modules in, made the working directory; imports are undone."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write_module(root: Path, path: str, text: str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    importlib.invalidate_caches()


@pytest.mark.parametrize(
    ("files", "name", "main"),
    [
        ({"findme_a.py": APP_LINE.format(name="app", main="a")}, "findme_a", "a"),
        ({"findme_b.py": APP_LINE.format(name="celery", main="b")}, "findme_b", "b"),
        ({"findme_c.py": APP_LINE.format(name="celeriac", main="c")}, "findme_c", "c"),
        ({"findme_d.py": APP_LINE.format(name="mine", main="d")}, "findme_d:mine", "d"),
        ({"findme_e.py": APP_LINE.format(name="mine", main="e")}, "findme_e.mine", "e"),
        ({"findme_f.py": APP_LINE.format(name="other", main="f")}, "findme_f", "f"),
        (
            {"findme_g/__init__.py": "", "findme_g/celery.py": APP_LINE.format(name="a", main="g")},
            "findme_g",
            "g",
        ),
        (
            {"findme_h/__init__.py": "", "findme_h/core.py": APP_LINE.format(name="x", main="h")},
            "findme_h.core:x",
            "h",
        ),
        (
            {"findme_i.py": "app = object()\n" + APP_LINE.format(name="celery", main="i")},
            "findme_i",
            "i",
        ),
    ],
    ids=[
        "attribute-app",
        "attribute-celery",
        "attribute-celeriac",
        "module-colon-attribute",
        "module-dot-attribute",
        "any-instance",
        "package-celery-submodule",
        "submodule-colon-attribute",
        "skips-an-app-that-is-not-celeriac",
    ],
)
def test_find_app_accepts_the_forms_celery_accepts(
    source_tree: Path, files: dict[str, str], name: str, main: str
) -> None:
    for path, text in files.items():
        write_module(source_tree, path, text)

    app = find_app(name)

    assert app.main == main


def test_find_app_names_the_missing_dependency_of_the_project(source_tree: Path) -> None:
    write_module(source_tree, "needs_dependency.py", "import no_such_dependency\n")

    expected = r"while importing 'needs_dependency': No module named 'no_such_dependency'"
    with pytest.raises(AppNotFound, match=expected):
        find_app("needs_dependency")


def test_find_app_reports_a_missing_attribute(source_tree: Path) -> None:
    write_module(source_tree, "has_no_attr.py", APP_LINE.format(name="app", main="z"))

    with pytest.raises(AppNotFound, match="'has_no_attr:nope'"):
        find_app("has_no_attr:nope")


def test_find_app_refuses_an_attribute_that_is_not_an_app(source_tree: Path) -> None:
    write_module(source_tree, "not_an_app.py", "value = 3\n")

    with pytest.raises(AppNotFound, match="'not_an_app:value' is 'int', not a Celeriac app"):
        find_app("not_an_app:value")


def test_find_app_reports_a_broken_celery_submodule(source_tree: Path) -> None:
    write_module(source_tree, "broken_pkg/__init__.py", "")
    write_module(source_tree, "broken_pkg/celery.py", "from os import no_such_name\n")

    with pytest.raises(AppNotFound, match=r"while importing 'broken_pkg\.celery'"):
        find_app("broken_pkg")


# ---- the root command -----------------------------------------------------------------


def test_version_prints_the_package_version(run: RunCLI) -> None:
    completed = run("--version")

    assert completed.returncode == 0
    assert completed.stdout.strip() == f"celeriac {__version__}"


def test_python_dash_m_help_lists_every_command(run: RunCLI) -> None:
    completed = run("--help")

    assert completed.returncode == 0
    for command in ("worker", "call", "result", "purge"):
        assert command in completed.stdout
    for option in ("--app", "--broker", "--result-backend", "--config", "--workdir", "--quiet"):
        assert option in completed.stdout


def test_unknown_app_gives_one_error_line_and_no_traceback(run: RunCLI, project: Path) -> None:
    completed = run("-A", "no_such_project", "call", "x")

    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [
        "Error: Unable to load celeriac application: no module named 'no_such_project'"
        f" (searched {os.path.realpath(project)} and sys.path)"
    ]
    assert "Traceback" not in completed.stderr


def test_module_without_an_app_names_what_was_tried(run: RunCLI, project: Path) -> None:
    (project / "empty.py").write_text("value = 1\n")

    completed = run("-A", "empty", "call", "x")

    assert completed.returncode == 1
    assert len(completed.stderr.splitlines()) == 1
    assert "attributes app, celery, celeriac of module 'empty'" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_unknown_broker_scheme_is_one_line_with_the_password_masked(run: RunCLI) -> None:
    completed = run("-A", "cliproj", "-b", "nosuch://user:s3cret@host/0", "call", "cliproj.add")

    assert completed.returncode == 1
    [line] = completed.stderr.splitlines()
    assert line.startswith(
        "Error: no broker transport for scheme 'nosuch' in nosuch://user:****@host/0;"
        " known schemes: amqp, "
    )
    assert "sqlite" in line
    assert "s3cret" not in line
    assert "s3cret" not in completed.stderr + completed.stdout


def test_workdir_is_entered_before_the_app_is_loaded(
    run: RunCLI, project: Path, broker_url: str, client: Celeriac
) -> None:
    elsewhere = project.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "otherproj.py").write_text("from celeriac import Celeriac\napp = Celeriac('o')\n")

    completed = run("--workdir", str(elsewhere), "-A", "otherproj", "-b", broker_url, "call", "t")

    assert completed.returncode == 0, completed.stderr
    assert client.transport.queue_size("celery") == 1


# ---- call -----------------------------------------------------------------------------


def test_call_prints_the_task_id_and_the_message_waits_on_the_queue(
    run: RunCLI, broker_url: str, client: Celeriac
) -> None:
    completed = run("-A", "cliproj", "-b", broker_url, "call", "cliproj.add", "--args", "[1, 2]")

    assert completed.returncode == 0, completed.stderr
    task_id = completed.stdout.strip()
    assert len(task_id) == 36
    assert client.transport.queue_size("celery") == 1
    [delivery] = client.transport.fetch(["celery"], 1, timeout=1.0)
    assert delivery.envelope.headers["id"] == task_id
    assert delivery.envelope.headers["task"] == "cliproj.add"


def test_call_routes_to_the_queue_given_and_holds_a_countdown_in_the_broker(
    run: RunCLI, broker_url: str, client: Celeriac
) -> None:
    completed = run(
        "-A", "cliproj", "-b", broker_url, "call", "cliproj.add",
        "-a", "[1, 2]", "-k", '{"y": 3}', "--queue", "images", "--countdown", "60",
        "--expires", "120", "--priority", "5",
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    assert client.transport.queue_size("images") == 1
    assert client.transport.fetch(["images"], 1, timeout=0.2) == []


def test_call_with_bad_json_is_a_usage_error(run: RunCLI, broker_url: str) -> None:
    completed = run("-A", "cliproj", "-b", broker_url, "call", "cliproj.add", "--args", "[1,")

    assert completed.returncode == 2
    assert "Invalid value for '-a' / '--args': '[1,' is not valid JSON" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_call_kwargs_must_be_a_json_object(run: RunCLI, broker_url: str) -> None:
    completed = run("-A", "cliproj", "-b", broker_url, "call", "cliproj.add", "--kwargs", "[1]")

    assert completed.returncode == 2
    assert "'[1]' is not a JSON object" in completed.stderr


def test_quiet_call_prints_nothing(run: RunCLI, broker_url: str, client: Celeriac) -> None:
    completed = run("-q", "-A", "cliproj", "-b", broker_url, "call", "cliproj.add")

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == ""
    assert client.transport.queue_size("celery") == 1


def test_user_preload_options_are_parsed_and_sent_with_the_signal(
    run: RunCLI, broker_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "preload.json"

    completed = run(
        "-A", "cliproj", "-b", broker_url, "call", "cliproj.add", "--stage", "prod",
        PRELOAD_LOG=str(log),
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    assert json.loads(log.read_text()) == {
        "sender": "call",
        "app": "cliproj",
        "options": {"stage": "prod"},
    }


# ---- result ---------------------------------------------------------------------------


def test_result_prints_a_stored_return_value(
    run: RunCLI, broker_url: str, client: Celeriac
) -> None:
    client.backend.store("t-1", build_meta("t-1", states.SUCCESS, {"sum": 3}))

    completed = run("-A", "cliproj", "-b", broker_url, "result", "t-1")

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"sum": 3}


def test_result_of_a_failed_task_is_one_error_line_and_traceback_shows_it(
    run: RunCLI, broker_url: str, client: Celeriac
) -> None:
    traceback = 'Traceback (most recent call last):\n  File "x.py"\nZeroDivisionError: nope\n'
    failure = build_meta("t-2", states.FAILURE, ZeroDivisionError("nope"), traceback=traceback)
    client.backend.store("t-2", failure)

    failed = run("-A", "cliproj", "-b", broker_url, "result", "t-2")
    shown = run("-A", "cliproj", "-b", broker_url, "result", "t-2", "--traceback")

    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        "Error: task t-2 failed: ZeroDivisionError: nope (--traceback shows where)"
    ]
    assert shown.returncode == 0
    assert shown.stdout == traceback


def test_result_with_timeout_reports_a_task_not_ready(run: RunCLI, broker_url: str) -> None:
    completed = run("-A", "cliproj", "-b", broker_url, "result", "t-3", "--timeout", "0.2")

    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [
        "Error: task t-3 is not ready after 0.2 s (state PENDING)"
    ]


def test_result_with_an_unknown_task_name_is_an_error(run: RunCLI, broker_url: str) -> None:
    completed = run("-A", "cliproj", "-b", broker_url, "result", "t-4", "-t", "cliproj.nope")

    assert completed.returncode == 1
    assert "no task named 'cliproj.nope'" in completed.stderr


# ---- purge ----------------------------------------------------------------------------


def send_three(client: Celeriac) -> None:
    client.send_task("cliproj.add", args=[1, 1])
    client.send_task("cliproj.add", args=[2, 2])
    client.send_task("cliproj.add", args=[3, 3], queue="images")


def test_purge_counts_the_messages_of_every_known_queue(
    run: RunCLI, broker_url: str, client: Celeriac
) -> None:
    send_three(client)

    completed = run("-A", "cliproj", "--config", "cliconfig", "-b", broker_url, "purge", "-f")

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "Purged 3 messages from 2 known task queues."
    assert client.transport.queue_size("celery") == 0
    assert client.transport.queue_size("images") == 0


def test_purge_leaves_excluded_queues_alone(run: RunCLI, broker_url: str, client: Celeriac) -> None:
    send_three(client)

    completed = run(
        "-A", "cliproj", "--config", "cliconfig", "-b", broker_url, "purge", "-f", "-X", "images"
    )

    assert completed.stdout.strip() == "Purged 2 messages from 1 known task queue."
    assert client.transport.queue_size("images") == 1


def test_purge_of_empty_queues_says_so(run: RunCLI, broker_url: str) -> None:
    completed = run("-A", "cliproj", "-b", broker_url, "purge", "-f", "-Q", "celery")

    assert completed.stdout.strip() == "No messages purged from 1 queue."


def test_purge_asks_first_and_a_no_keeps_the_messages(
    run: RunCLI, broker_url: str, client: Celeriac
) -> None:
    send_three(client)

    declined = run("-A", "cliproj", "-b", broker_url, "purge", stdin="n\n")
    accepted = run("-A", "cliproj", "-b", broker_url, "purge", stdin="y\n")

    assert declined.returncode == 1
    assert "There is no undo for this operation!" in declined.stdout
    assert "Aborted!" in declined.stderr
    assert accepted.returncode == 0
    assert "Purged 2 messages from 1 known task queue." in accepted.stdout
    assert client.transport.queue_size("images") == 1


# ---- worker ---------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_worker_runs_a_task_sent_by_the_public_api_and_exits_zero_on_sigterm(
    project: Path, broker_url: str, client: Celeriac, tmp_path: Path
) -> None:
    pidfile = tmp_path / "worker.pid"
    output = tmp_path / "worker.log"
    command = [
        sys.executable, "-m", "celeriac", "-A", "cliproj", "-b", broker_url, "worker", "--purge",
        "-P", "threads", "-c", "2", "-l", "info", "-n", "w1@%h", "--pidfile", str(pidfile),
    ]  # fmt: skip
    stale = client.send_task("cliproj.add", args=[100, 100])
    with output.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=project, env=command_environment(), stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        assert wait_for(lambda: "Purged 1 message from 1 known task queue." in output.read_text())
        result = client.send_task("cliproj.add", args=[2, 3])

        assert result.get(timeout=20) == 5
        assert pidfile.read_text().strip() == str(process.pid)
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    log = output.read_text()
    assert "w1@" in log
    assert "transport:   " + broker_url in log
    assert stale.state == states.PENDING
    assert not pidfile.exists()


def test_worker_refuses_a_pidfile_held_by_a_live_process(
    run: RunCLI, broker_url: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "held.pid"
    pidfile.write_text(f"{os.getpid()}\n")

    completed = run("-A", "cliproj", "-b", broker_url, "worker", "--pidfile", str(pidfile))

    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1] == (
        f"Error: pidfile {pidfile} holds the pid {os.getpid()} of a running process"
    )
    assert pidfile.read_text() == f"{os.getpid()}\n"


def test_worker_with_an_unknown_broker_fails_before_its_banner(run: RunCLI) -> None:
    completed = run("-A", "cliproj", "-b", "nosuch://user:s3cret@host/0", "worker", "-P", "solo")

    assert completed.returncode == 1
    assert completed.stdout == ""
    assert completed.stderr.splitlines()[-1].startswith("Error: no broker transport for scheme")
    assert "s3cret" not in completed.stderr
    assert "Traceback" not in completed.stderr


def test_shell_starts_with_the_app_the_canvas_and_the_tasks(run: RunCLI, broker_url: str) -> None:
    lines = [
        "print(sorted(n for n in ('add', 'app', 'celery', 'chain', 'group') if n in globals()))",
        "print(add.name, app.main, celery is app)",
        "print(group(add.s(i, i) for i in range(2)).apply().get())",
    ]

    done = run("-A", "cliproj", "-b", broker_url, "shell", "--python", stdin="\n".join(lines))

    assert done.returncode == 0, done.stderr
    assert "Tasks: add\n" in done.stderr
    assert ">>> ['add', 'app', 'celery', 'chain', 'group']\n" in done.stdout
    assert "cliproj.add cliproj True\n" in done.stdout
    assert "[0, 2]\n" in done.stdout


def test_shell_without_tasks_leaves_them_out(run: RunCLI, broker_url: str) -> None:
    done = run(
        "-A", "cliproj", "-b", broker_url, "shell", "--python", "-T",
        stdin="print('add' in globals(), 'app' in globals())",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "False True\n" in done.stdout

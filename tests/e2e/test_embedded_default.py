"""The embedded default with no URL anywhere: a worker and a client started from other
directories meet in one SQLite file beside the module that makes the app, whose side
files all stay in its hidden ``.celeriac`` folder; the environment's URLs win over it;
and where that folder cannot be used, a per-user data folder keyed by the app's name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.app import BACKEND_ENVIRONMENT, BROKER_ENVIRONMENT
from celeriac.store_location import default_sqlite_url
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.slow

TASKS = """
from celeriac import Celery

app = Celery("tasks")


@app.task
def add(x, y):
    return x + y
"""

CLIENT = "from tasks import add; print(add.delay(2, 3).get(timeout=20))"


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without any broker or result URL, plus ``extra``."""
    cleared = {*BROKER_ENVIRONMENT, *BACKEND_ENVIRONMENT, "BROKER_URL", "RESULT_BACKEND", "APP"}
    env = {name: value for name, value in os.environ.items() if name not in cleared}
    return {**env, **extra}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "tasks.py").write_text(TASKS)
    return folder


@pytest.fixture
def worker(project: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``celeriac -A tasks worker`` started in a directory of its own, with ``tasks`` on
    PYTHONPATH; killed by PID afterwards."""
    started_in = tmp_path / "worker-cwd"
    started_in.mkdir()
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "celeriac", "-A", "tasks", "worker", "-P", "threads",
             "-c", "2", "-l", "info"],
            cwd=started_in,
            env=environment(PYTHONPATH=str(project)),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert wait_for(lambda: " ready: pool " in log.read_text(), timeout=30), log.read_text()
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_a_client_in_another_directory_reaches_the_workers_default_store(
    project: Path, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "client-cwd"
    elsewhere.mkdir()

    client = subprocess.run(
        [sys.executable, "-c", CLIENT],
        cwd=elsewhere,
        env=environment(PYTHONPATH=str(project)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert client.returncode == 0, client.stderr
    assert client.stdout.strip() == "5"
    log = (tmp_path / "worker.log").read_text()
    assert f"  transport:   sqlite:///{project}/.celeriac/celeriac.sqlite3\n" in log
    assert {path.name for path in project.iterdir()} - {"__pycache__"} == {".celeriac", "tasks.py"}
    hidden = sorted(path.name for path in (project / ".celeriac").iterdir())
    assert hidden[:2] == [".gitignore", "celeriac.sqlite3"]
    assert all(name.startswith("celeriac.sqlite3") for name in hidden[1:]), hidden
    assert (project / ".celeriac" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert list(elsewhere.iterdir()) == []
    assert list((tmp_path / "worker-cwd").iterdir()) == []


def test_the_command_line_client_from_another_directory_reaches_it_too(
    project: Path, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    def celeriac(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celeriac", "-A", "tasks", *arguments],
            cwd=tmp_path,
            env=environment(PYTHONPATH=str(project)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    sent = celeriac("call", "tasks.add", "--args", "[20, 22]")
    result = celeriac("result", sent.stdout.strip(), "--timeout", "20")

    assert sent.returncode == 0, sent.stderr
    assert (result.returncode, result.stdout.strip()) == (0, "42"), result.stderr


def test_the_environments_urls_win_over_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", f"sqlite:///{tmp_path}/from-celery-variable.db")
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", "memory://results")

    app = Celeriac("tasks", set_as_current=False)

    assert app.broker_url == f"sqlite:///{tmp_path}/from-celery-variable.db"
    assert app.result_backend_url == "memory://results"
    monkeypatch.setenv("CELERIAC_BROKER_URL", "memory://first")
    assert app.broker_url == "memory://first"


def test_an_unusable_folder_falls_back_to_a_per_user_folder_keyed_by_the_apps_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = tmp_path / "read-only-project"
    project.mkdir()
    (project / ".celeriac").write_text("a file where the folder should be")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))

    url = default_sqlite_url("proj.app", str(project / "tasks.py"))

    assert url == f"sqlite:///{tmp_path}/data/celeriac/proj.app.sqlite3"
    assert (tmp_path / "data" / "celeriac").is_dir()


def test_an_app_made_where_there_is_no_file_uses_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)

    assert default_sqlite_url("tasks", None) == f"sqlite:///{tmp_path}/.celeriac/celeriac.sqlite3"

"""The handler and task examples of seeds 000, 001, 002 and 004, run by real processes.

Each example is written into a project exactly as its seed gives it, but for ``celeriac``
in place of ``celery`` in its imports; the project uses the embedded SQLite default
(``Celery()`` with no broker) in the test's directory. Every test checks what an example
does (what it printed, configured or changed), not only that its signal fired. Also here:
the logging signals (a ``setup_logging`` receiver takes logging over; the after-setup
signals add handlers that then receive the worker's and the tasks' lines), user preload
options in the click and the optparse form on every command, and a ``celeryd_init``
handler filtered by node name that configures one worker only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from celeriac.cli import main as celeriac_command

pytestmark = pytest.mark.slow

# ---- the project: the seeds' examples, unchanged but for their imports ---------------

PROJ_CELERY = """
import json
import logging
import os
import sys

import click

from celeriac import Celery
from celeriac import signals
from celeriac.bin.base import Option
from celeriac.signals import after_task_publish, celeryd_after_setup, celeryd_init
from celeriac.signals import after_setup_logger, after_setup_task_logger
from celeriac.signals import task_failure, task_postrun, task_success


def observe(kind, **data):
    with open("observed.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps({"kind": kind, "pid": os.getpid(), **data}, default=repr) + "\\n")


def enable_monitoring():
    observe("monitoring", argv=sys.argv[1:])


# seed 001, user_preload_options
app = Celery()
app.user_options['preload'].add(Option(
    '--monitoring', action='store_true',
    help='Enable our external monitoring utility, blahblah',
))

@signals.user_preload_options.connect
def handle_preload_options(options, **kwargs):
    if options['monitoring']:
        enable_monitoring()

# Celery 5's form of a preload option: a click option.
app.user_options['preload'].add(click.Option(('-Z', '--template'), default='default'))
app.conf.include = ['proj.tasks']
app.conf.accept_content = ['json', 'pickle']


# seed 001, after_task_publish
@after_task_publish.connect
def task_sent_handler(sender=None, headers=None, body=None, **kwargs):
    # information about task are located in headers for task messages
    # using the task protocol version 2.
    info = headers if 'task' in headers else body
    print('after_task_publish for task id {info[id]}'.format(
        info=info,
    ))


# seed 001, celeryd_after_setup
@celeryd_after_setup.connect
def setup_direct_queue(sender, instance, **kwargs):
    queue_name = '{0}.dq'.format(sender)  # sender is the nodename of the worker
    instance.app.amqp.queues.select_add(queue_name)


# seed 001, celeryd_init, with a sender
@celeryd_init.connect(sender='worker12@example.com')
def configure_worker12(conf=None, **kwargs):
    conf.task_default_rate_limit = '10/m'


# seed 001, celeryd_init, without a sender
@celeryd_init.connect
def configure_workers(sender=None, conf=None, **kwargs):
    if sender in ('worker1@example.com', 'worker2@example.com'):
        conf.task_default_rate_limit = '10/m'
    if sender == 'worker3@example.com':
        conf.worker_prefetch_multiplier = 0


# seed 002, task_postrun
@task_postrun.connect
def task_execute(sender=None, task_id=None, args=None, retval=None, state=None, **kwargs):
    \"\"\"celery执行的任务信号，会在任务执行之后进行调度和信号的发送\"\"\"
    # 任务的执行者
    print(sender)
    # 任务id
    print(task_id)
    #
    print(args)
    print(kwargs)
    print(retval)
    print(state)


# seed 002, task_success
@task_success.connect
def task_success(sender, result = None, *args, **kwargs):
    \"\"\"celery执行的任务信号，会在任务执行成功之后触发信号的发送\"\"\"
    print(sender)
    print(f"当前的任务返回的结果是{result}")
    print(*args)
    print(kwargs)


# seed 002, task_failure
@task_failure.connect
def task_failure(sender, task_id, exception, traceback, einfo, args, **kwargs):
    \"\"\"任务执行失败之后发送的信号\"\"\"
    print(sender)
    print(task_id)
    print(exception)
    print(traceback)
    print(einfo)
    print(args)
    print(kwargs)


# The logging signals, as Celery's documentation uses them: add handlers of one's own.
@after_setup_logger.connect
def setup_loggers(logger, *args, **kwargs):
    formatter = logging.Formatter('%(asctime)s - %(name)s - %(levelname)s - %(message)s')
    fh = logging.FileHandler('logs.log')
    fh.setFormatter(formatter)
    logger.addHandler(fh)


@after_setup_task_logger.connect
def setup_task_loggers(logger, *args, **kwargs):
    fh = logging.FileHandler('tasks.log')
    fh.setFormatter(logging.Formatter('%(task_name)s[%(task_id)s]: %(message)s'))
    logger.addHandler(fh)


# Observers for the tests, not from a seed.
@after_setup_logger.connect
@after_setup_task_logger.connect
def observe_logger_setup(sender=None, signal=None, logger=None, **kwargs):
    observe(signal.name, logger=logger.name, **kwargs)


@signals.user_preload_options.connect
def observe_preload_options(sender=None, app=None, options=None, **kwargs):
    observe("preload", argv=sys.argv[1:], app=repr(app), options=options)


@signals.task_prerun.connect
def observe_prerun(sender=None, task=None, task_id=None, **kwargs):
    observe("prerun", name=task.name, id=task_id, shadow=task.request.shadow)


@signals.task_internal_error.connect
def observe_internal_error(sender=None, task_id=None, args=None, kwargs=None, **more):
    observe("internal_error", id=task_id, args=args, kwargs=kwargs,
            exception=type(more["exception"]).__name__, request=type(more["request"]).__name__)


@signals.worker_ready.connect
def observe_ready(**kwargs):
    observe("ready")
"""

PROJ_TASKS = """
from celeriac.utils.imports import qualname
from celeriac.utils.log import get_task_logger
from imaginary_twitter_lib import Twitter
from proj.celery import app

logger = get_task_logger(__name__)


@app.task
def add(x, y):
    logger.info('adding %s and %s', x, y)
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def divide(x, y):
    return x + y / 0


def double(x):
    return 2 * x


@app.task(bind=True)
def settings_seen(self):
    conf = self.app.conf
    return [conf.task_default_rate_limit, conf.worker_prefetch_multiplier]


# seed 004, Task.shadow_name
def shadow_name(task, args, kwargs, options):
    return qualname(args[0])

@app.task(shadow_name=shadow_name, serializer='pickle')
def apply_function_async(fun, *args, **kwargs):
    return fun(*args, **kwargs)


# seed 004, Task.retry
@app.task(bind=True)
def tweet(self, auth, message):
    twitter = Twitter(oauth=auth)
    try:
        twitter.post_status_update(message)
    except twitter.FailWhale as exc:
        # Retry in 5 minutes.
        raise self.retry(countdown=60 * 5, exc=exc)
"""

# seed 001, after_task_publish with a sender; in a module of its own, as the handler has
# the name of the one without a sender (in one module it would replace it, and signals
# hold their receivers weakly).
PROJ_PUBLISHING = """
from celeriac.signals import after_task_publish


@after_task_publish.connect(sender='proj.tasks.add')
def task_sent_handler(sender=None, headers=None, body=None, **kwargs):
    # information about task are located in headers for task messages
    # using the task protocol version 2.
    info = headers if 'task' in headers else body
    print('after_task_publish for task id {info[id]}'.format(
        info=info,
    ))
"""

# seed 000, task_sent
PROJ_SENT = """
from celeriac.signals import task_sent

def task_sent_handler(sender=None, task_id=None, task=None, args=None,
                      kwargs=None, **kwds):
    print("Got signal task_sent for task id %s" % (task_id, ))

task_sent.connect(task_sent_handler)

task_sent.connect(task_sent_handler, sender="tasks.add")
"""

# The library the seed's retry example imports, as a stand-in whose service is down.
TWITTER_LIB = """
class Twitter:
    class FailWhale(Exception):
        pass

    def __init__(self, oauth):
        self.oauth = oauth

    def post_status_update(self, message):
        raise self.FailWhale(f"over capacity: {message}")
"""

# A project whose setup_logging receiver configures logging itself (seed 001).
QUIETPROJ = """
import json
import logging.config
import os

from celeriac import Celery
from celeriac.signals import setup_logging, worker_ready

app = Celery()


@setup_logging.connect
def config_loggers(*args, **kwargs):
    logging.config.dictConfig({
        'version': 1,
        'disable_existing_loggers': False,
        'formatters': {'mine': {'format': 'MINE %(levelname)s %(name)s: %(message)s'}},
        'handlers': {'file': {'class': 'logging.FileHandler', 'filename': 'mine.log',
                              'formatter': 'mine'}},
        'root': {'handlers': ['file'], 'level': 'INFO'},
    })
    with open('setup_logging.json', 'w', encoding='utf-8') as file:
        json.dump({key: kwargs[key] for key in ('loglevel', 'logfile', 'format', 'colorize')},
                  file)


@worker_ready.connect
def observe_ready(**kwargs):
    with open('observed.jsonl', 'a', encoding='utf-8') as log:
        log.write(json.dumps({'kind': 'ready', 'pid': os.getpid()}) + '\\n')
"""

CLIENT_SCRIPT = """
import json
import sys

import proj.publishing
import proj.sent
from proj import tasks
from proj.celery import app

added = tasks.add.delay(1, 2)
multiplied = tasks.mul.delay(2, 3)
print(json.dumps({"add": added.id, "mul": multiplied.id}), file=sys.stderr)
print(added.get(timeout=20), multiplied.get(timeout=20), file=sys.stderr)
"""


@dataclass
class Project:
    """The project's directory and the processes started in it (killed by PID after)."""

    folder: Path
    processes: list[subprocess.Popen[bytes]]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("APP", "BROKER_URL", "RESULT_BACKEND", "CONFIG_MODULE"):
            env.pop(name, None)
        env["PYTHONIOENCODING"] = "utf-8"
        return env

    def command(self, *arguments: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``celeriac ARGUMENTS`` here and wait for it."""
        return subprocess.run(
            [sys.executable, "-m", "celeriac", *arguments],
            cwd=self.folder,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def script(self, program: str) -> subprocess.CompletedProcess[str]:
        """Run a Python program here, as a client would."""
        return subprocess.run(
            [sys.executable, "-c", program],
            cwd=self.folder,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def worker(self, app: str, nodename: str, *extra: str) -> Worker:
        """Start ``celeriac -A APP worker -P threads -c 1 -n NODENAME`` and wait for it."""
        output = self.folder / f"{nodename}.out"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "celeriac", "-A", app, "worker", "-P", "threads",
                 "-c", "1", "-l", "info", "-n", nodename, *extra],
                cwd=self.folder,
                env=self.env(),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.processes.append(process)
        worker = Worker(process, output)
        deadline = time.monotonic() + 30
        while not any(r["pid"] == process.pid for r in self.observed("ready")):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker {nodename} did not start:\n{worker.output()}")
            time.sleep(0.05)
        return worker

    def observed(self, kind: str) -> list[dict[str, Any]]:
        path = self.folder / "observed.jsonl"
        if not path.exists():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [record for record in records if record["kind"] == kind]

    def read(self, name: str) -> str:
        return (self.folder / name).read_text(encoding="utf-8")


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    output_path: Path

    def stop(self) -> str:
        """Stop warmly (buffered prints reach the file) and return everything it printed."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=20) == 0
        return self.output()

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    package = tmp_path / "proj"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "celery.py").write_text(PROJ_CELERY)
    (package / "tasks.py").write_text(PROJ_TASKS)
    (package / "publishing.py").write_text(PROJ_PUBLISHING)
    (package / "sent.py").write_text(PROJ_SENT)
    (tmp_path / "imaginary_twitter_lib.py").write_text(TWITTER_LIB)
    (tmp_path / "quietproj.py").write_text(QUIETPROJ)
    started = Project(tmp_path, [])
    yield started
    for process in started.processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def client_call(program: str) -> str:
    """A client program run in the project: imports the app and prints JSON to stdout."""
    return "import json\nfrom proj import tasks\nfrom proj.celery import app\n" + program


# ---- seeds 000, 001 (after_task_publish) and 002 ---------------------------------------


def test_seed_publish_and_task_handlers_print_what_the_seeds_show(project: Project) -> None:
    worker = project.worker("proj", "w1@example.com")

    client = project.script(CLIENT_SCRIPT)
    failed = project.script(
        client_call("r = tasks.divide.delay(1, 2)\ntry:\n    r.get(timeout=20)\n"
                    "except ZeroDivisionError:\n    print(json.dumps(r.id))")
    )  # fmt: skip
    printed = worker.stop()

    assert client.returncode == 0, client.stderr
    ids = json.loads(client.stderr.splitlines()[0])
    assert client.stderr.splitlines()[1] == "3 6"
    published = client.stdout.splitlines()
    # Without a sender the handler prints for every task; with one, only for proj.tasks.add.
    assert published.count(f"after_task_publish for task id {ids['add']}") == 2
    assert published.count(f"after_task_publish for task id {ids['mul']}") == 1
    # Seed 000's task_sent: one print per task (the second connect filters on "tasks.add").
    assert published.count(f"Got signal task_sent for task id {ids['add']}") == 1
    # Seed 002's task_postrun: sender, task id, args, kwargs, return value, state.
    lines = printed.splitlines()
    at = lines.index(ids["add"])
    assert lines[at - 1].startswith("<@task: proj.tasks.add of ")
    assert lines[at + 1] == "[1, 2]"
    assert "'task': <@task: proj.tasks.add of " in lines[at + 2]
    assert lines[at + 3 : at + 5] == ["3", "SUCCESS"]
    # Seed 002's task_success and task_failure.
    assert "当前的任务返回的结果是3" in lines
    assert "当前的任务返回的结果是6" in lines
    assert failed.returncode == 0, failed.stderr
    failed_id = json.loads(failed.stdout.splitlines()[-1])
    at = lines.index(failed_id)
    assert lines[at + 1] == "division by zero"
    assert lines[at + 2].startswith("<traceback object at ")
    assert lines[at + 3] == "Traceback (most recent call last):"
    assert "ZeroDivisionError: division by zero" in printed


# ---- seed 001: celeryd_init and celeryd_after_setup -----------------------------------


def test_celeryd_init_handlers_configure_only_the_workers_they_name(project: Project) -> None:
    project.worker("proj", "worker12@example.com")
    project.worker("proj", "worker3@example.com")

    seen = project.script(
        client_call(
            "print(json.dumps([tasks.settings_seen.apply_async(queue=q).get(timeout=20)\n"
            "    for q in ('worker12@example.com.dq', 'worker3@example.com.dq')]))"
        )
    )

    assert seen.returncode == 0, seen.stderr
    worker12, worker3 = json.loads(seen.stdout.splitlines()[-1])
    assert worker12 == ["10/m", 4]
    assert worker3 == [None, 0]


# ---- seed 004: shadow_name with qualname, and retry -----------------------------------


def test_seed_shadow_name_example_names_the_message_after_the_function(project: Project) -> None:
    project.worker("proj", "w1@example.com")

    ran = project.script(
        client_call(
            "r = tasks.apply_function_async.delay(tasks.double, 21)\n"
            "print(json.dumps([r.id, r.get(timeout=20)]))"
        )
    )

    assert ran.returncode == 0, ran.stderr
    task_id, value = json.loads(ran.stdout.splitlines()[-1])
    assert value == 42
    [prerun] = [r for r in project.observed("prerun") if r["id"] == task_id]
    assert prerun["name"] == "proj.tasks.apply_function_async"
    assert prerun["shadow"] == "proj.tasks.double"


def test_seed_retry_example_puts_the_task_back_for_five_minutes(project: Project) -> None:
    project.worker("proj", "w1@example.com")

    sent = project.script(
        client_call(
            "import time\n"
            "r = tasks.tweet.delay('token', 'hello')\n"
            "deadline = time.monotonic() + 20\n"
            "while r.state != 'RETRY' and time.monotonic() < deadline:\n"
            "    time.sleep(0.05)\n"
            "print(json.dumps([r.state, repr(r.result), app.transport.queue_size('celery'),\n"
            "                  len(app.transport.fetch(['celery'], 10, 0.5))]))"
        )
    )

    assert sent.returncode == 0, sent.stderr
    state, result, waiting, ready = json.loads(sent.stdout.splitlines()[-1])
    assert state == "RETRY"
    assert result == "FailWhale('over capacity: hello')"
    assert (waiting, ready) == (1, 0)  # the retry waits in the broker, not yet due


# ---- logging ---------------------------------------------------------------------------


def test_a_setup_logging_receiver_leaves_logging_to_the_user(project: Project) -> None:
    worker = project.worker("quietproj", "quiet@example.com")

    printed = worker.stop()

    received = json.loads(project.read("setup_logging.json"))
    assert received == {
        "colorize": False,
        "format": "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
        "logfile": None,
        "loglevel": 20,
    }
    assert "ready: pool threads" not in printed
    assert "INFO/MainProcess" not in printed
    assert "MINE INFO celeriac.worker: quiet@example.com ready: pool threads" in project.read(
        "mine.log"
    )


def test_after_setup_signals_give_the_loggers_to_add_handlers_to(project: Project) -> None:
    worker = project.worker("proj", "w1@example.com")

    added = project.script(client_call("print(tasks.add.delay(2, 3).get(timeout=20))"))
    worker.stop()

    assert added.returncode == 0, added.stderr
    [root] = project.observed("after_setup_logger")
    [task] = project.observed("after_setup_task_logger")
    assert root["logger"] == "root"
    assert task["logger"] == "celeriac.task"
    for record in (root, task):
        assert (record["loglevel"], record["logfile"], record["colorize"]) == (20, None, False)
    assert root["format"] == "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
    assert "%(task_name)s[%(task_id)s]" in task["format"]
    assert "celeriac.worker - INFO - w1@example.com ready: pool threads" in project.read("logs.log")
    assert "proj.tasks.add[" in project.read("tasks.log")
    assert "]: adding 2 and 3" in project.read("tasks.log")


# ---- user preload options, on every command --------------------------------------------


def test_every_command_accepts_the_preload_options_of_both_forms(project: Project) -> None:
    for name in sorted(celeriac_command.commands):
        shown = project.command("-A", "proj", name, "--help")

        assert shown.returncode == 0, shown.stderr
        assert "--monitoring" in shown.stdout, name
        assert "Enable our external monitoring utility" in shown.stdout, name
        assert "--template" in shown.stdout, name


def test_multi_hands_the_preload_options_on_to_each_worker(project: Project) -> None:
    shown = project.command("-A", "proj", "multi", "show", "w1", "w2", "--monitoring", "-c", "2")

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 2
    assert all(" -A proj --monitoring worker --detach " in line for line in lines)
    assert all(line.endswith(" -c 2") for line in lines)


def test_preload_options_reach_the_seed_handler_from_each_command(project: Project) -> None:
    worker = project.worker("proj", "w1@example.com", "--monitoring", "-Z", "fast")
    called = project.command("-A", "proj", "call", "proj.tasks.add", "--args", "[1, 2]",
                             "--monitoring")  # fmt: skip
    task_id = called.stdout.splitlines()[-1]  # after the seed handler's own line
    fetched = project.command("-A", "proj", "result", task_id, "--timeout", "20", "--monitoring")
    purged = project.command("-A", "proj", "purge", "-f", "--template", "slow")
    worker.stop()

    assert called.returncode == 0, called.stderr
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.splitlines()[-1] == "3"
    assert purged.returncode == 0, purged.stderr
    monitored = [record["argv"][2] for record in project.observed("monitoring")]
    assert monitored == ["worker", "call", "result"]
    sent = {record["argv"][2]: record for record in project.observed("preload")}
    assert sent["worker"]["options"] == {"monitoring": True, "template": "fast"}
    assert sent["call"]["options"] == {"monitoring": True, "template": "default"}
    assert sent["purge"]["options"] == {"monitoring": False, "template": "slow"}
    assert sent["worker"]["pid"] == worker.process.pid
    assert all(record["app"].startswith("<Celeriac __main__") for record in sent.values())


# ---- task_internal_error for a message whose kwargs are not a mapping ------------------


def test_internal_error_carries_the_arguments_as_sent(project: Project) -> None:
    worker = project.worker("proj", "w1@example.com")

    sent = project.script(
        client_call(
            "with app.producer_or_acquire() as producer:\n"
            "    producer.publish([[1], ['y', 2], {}], routing_key='celery', headers={\n"
            "        'lang': 'py', 'task': 'proj.tasks.add', 'id': 'kw-list'})\n"
            "try:\n"
            "    app.AsyncResult('kw-list').get(timeout=20)\n"
            "except Exception as exc:\n"
            "    print(json.dumps(type(exc).__name__))"
        )
    )
    worker.stop()

    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout.splitlines()[-1]) == "InvalidTaskError"
    [error] = project.observed("internal_error")
    assert error["pid"] == worker.process.pid
    assert (error["id"], error["exception"]) == ("kw-list", "InvalidTaskError")
    assert (error["args"], error["kwargs"]) == ([1], ["y", 2])

"""app.conf: Celery's names and defaults, checks on set, loading from objects."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from celeriac import Celeriac
from celeriac.config import Settings
from celeriac.exceptions import ImproperlyConfigured


def test_defaults_read_by_attribute_and_by_key() -> None:
    conf = Settings()

    assert conf.task_serializer == "json"
    assert conf["accept_content"] == ["json"]
    assert conf.worker_prefetch_multiplier == 4


def test_a_mutated_default_sticks_and_is_not_shared_between_apps() -> None:
    first, second = Settings(), Settings()

    first.beat_schedule["every-minute"] = {"task": "tasks.add", "schedule": 60.0}
    first.accept_content.append("pickle")

    assert first.beat_schedule == {"every-minute": {"task": "tasks.add", "schedule": 60.0}}
    assert first.accept_content == ["json", "pickle"]
    assert second.beat_schedule == {}
    assert second.accept_content == ["json"]
    assert first.changes() == {
        "beat_schedule": {"every-minute": {"task": "tasks.add", "schedule": 60.0}},
        "accept_content": ["json", "pickle"],
    }


def test_deleting_a_setting_restores_its_default() -> None:
    conf = Settings({"task_serializer": "pickle"})
    conf.beat_schedule["x"] = {}

    del conf["task_serializer"]
    del conf["beat_schedule"]

    assert conf.task_serializer == "json"
    assert conf.beat_schedule == {}
    with pytest.raises(KeyError):
        del conf["task_serializer"]


def test_wrong_types_fail_when_set_with_the_setting_name() -> None:
    conf = Settings()

    with pytest.raises(ImproperlyConfigured, match="worker_prefetch_multiplier"):
        conf.worker_prefetch_multiplier = "four"
    with pytest.raises(ImproperlyConfigured, match="task_acks_late"):
        conf.task_acks_late = "yes"
    with pytest.raises(ImproperlyConfigured, match="takes int"):
        conf.worker_prefetch_multiplier = True


def test_unknown_settings_are_kept_as_given() -> None:
    conf = Settings()

    conf.my_own_setting = {"a": 1}

    assert conf.my_own_setting == {"a": 1}
    assert "my_own_setting" in conf


def test_config_from_object_with_a_namespace() -> None:
    app = Celeriac("proj", broker="memory://config-namespace")
    settings = types.SimpleNamespace(CELERY_TASK_ACKS_LATE=True, OTHER=1, task_serializer="x")

    app.config_from_object(settings, namespace="CELERY")

    assert app.conf.task_acks_late is True
    assert app.conf.task_serializer == "json"
    app.close()


def run_with_environment(code: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter: the variables are read when celeriac loads."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **variables},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_celery_s_worker_environment_variables_are_read() -> None:
    done = run_with_environment(
        "from celeriac import Celeriac; from celeriac.worker import state;"
        " print(Celeriac('x').conf.worker_revoke_expires, state.REVOKES_MAX)",
        CELERY_WORKER_REVOKE_EXPIRES="60",
        CELERY_WORKER_REVOKES_MAX="100",
    )

    assert done.stdout.split() == ["60.0", "100"]


def test_a_worker_environment_variable_that_is_not_a_number_is_named() -> None:
    done = run_with_environment("import celeriac", CELERY_WORKER_REVOKE_EXPIRES="3h")

    assert done.returncode == 1
    assert "ImproperlyConfigured: CELERY_WORKER_REVOKE_EXPIRES='3h' is not a number" in done.stderr

"""The helpers Celery users import from ``celery.utils`` and ``celery.bin.base``, at the same
paths under ``celeriac``: ``uuid``, ``cached_property``, ``imports.qualname`` and the
optparse-style ``Option`` of seed 001's preload example."""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Sequence

import click
import pytest
from click.testing import CliRunner

from celeriac.bin.base import Option
from celeriac.utils import cached_property, uuid
from celeriac.utils.imports import qualname


class Outer:
    def method(self) -> None:
        """A method, whose qualified name is nested."""

    @cached_property
    def expensive(self) -> list[int]:
        return [len(self.__dict__)]


def module_function() -> None:
    """A top-level function."""


def test_uuid_gives_a_new_task_id_each_call() -> None:
    first, second = uuid(), uuid()

    assert first != second
    assert str(uuid_module.UUID(first)) == first


def test_cached_property_computes_once_per_instance() -> None:
    outer = Outer()

    assert outer.expensive is outer.expensive
    assert Outer().expensive is not outer.expensive


@pytest.mark.parametrize(
    ("obj", "name"),
    [
        (module_function, f"{__name__}.module_function"),
        (Outer, f"{__name__}.Outer"),
        (Outer(), f"{__name__}.Outer"),
        (Outer.method, "Outer.method"),
        (len, "builtins.len"),
    ],
)
def test_qualname_names_objects_as_celery_does(obj: object, name: str) -> None:
    assert qualname(obj) == name


def run(options: Sequence[click.Option], *arguments: str) -> dict[str, object]:
    """Parse ``arguments`` with a command made of ``options``; return what it received."""
    received: dict[str, object] = {}

    @click.command(params=list(options))
    def command(**values: object) -> None:
        received.update(values)

    outcome = CliRunner().invoke(command, list(arguments))
    assert outcome.exit_code == 0, outcome.output
    return received


def test_seed_001_option_is_a_flag_defaulting_to_false() -> None:
    monitoring = Option(
        "--monitoring",
        action="store_true",
        help="Enable our external monitoring utility, blahblah",
    )

    assert run([monitoring]) == {"monitoring": False}
    assert run([monitoring], "--monitoring") == {"monitoring": True}
    assert monitoring.help == "Enable our external monitoring utility, blahblah"


def test_optparse_actions_types_and_dest_become_their_click_counterparts() -> None:
    options = [
        Option("-Z", "--template", default="default"),
        Option("--level", type="int", dest="lvl", default=3),
        Option("--quietly", action="store_false", dest="loud"),
        Option("--tag", action="append"),
        Option("-v", action="count", dest="verbose"),
        Option("--mode", type="choice", choices=["a", "b"]),
        Option("--ratio", type=float),
    ]

    defaults = run(options)
    given = run(options, "-Z", "x", "--level", "5", "--quietly", "--tag", "a", "--tag", "b",
                "-vv", "--mode", "b", "--ratio", "0.5")  # fmt: skip

    assert defaults == {
        "template": "default", "lvl": 3, "loud": True, "tag": (), "verbose": 0, "mode": None,
        "ratio": None,
    }  # fmt: skip
    assert given == {
        "template": "x", "lvl": 5, "loud": False, "tag": ("a", "b"), "verbose": 2, "mode": "b",
        "ratio": 0.5,
    }  # fmt: skip


def test_an_optparse_action_click_cannot_express_is_refused() -> None:
    with pytest.raises(TypeError, match="'callback' has no click counterpart"):
        Option("--hook", action="callback")

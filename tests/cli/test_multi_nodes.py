"""``celeriac multi``'s node syntax, Celery's: names or a count, options for every node
and for some, by name or position."""

from __future__ import annotations

import pytest

from celeriac.cli.multi_nodes import Node, parse_nodes


def nodes(line: str) -> list[Node]:
    return parse_nodes(line.split(), host="box")


def test_names_get_the_host_and_default_files() -> None:
    assert nodes("w1 w2@elsewhere") == [
        Node("w1@box", "w1.pid", "w1.log"),
        Node("w2@elsewhere", "w2.pid", "w2.log"),
    ]


def test_a_count_names_celery_1_to_n_and_no_name_is_celery() -> None:
    assert [node.name for node in nodes("3")] == ["celery1@box", "celery2@box", "celery3@box"]
    assert [node.name for node in nodes("-l INFO")] == ["celery@box"]


def test_options_for_every_node_and_for_some_by_name_or_position() -> None:
    first, second, third = nodes("3 -l INFO -c 2 -c:celery1 4 -Q:2-3 images -Q:1,3 video -E")

    assert first.arguments == ("-l", "INFO", "-c", "4", "-E", "-Q", "video")
    assert second.arguments == ("-l", "INFO", "-c", "2", "-E", "-Q", "images")
    assert third.arguments == ("-l", "INFO", "-c", "2", "-E", "-Q", "video")


def test_long_options_keep_their_value_and_files_expand_per_node() -> None:
    [node] = nodes("w1 --loglevel=DEBUG --pidfile=/run/%n.pid --logfile=/log/%p%I.log -E")

    assert node.arguments == ("--loglevel=DEBUG", "-E")
    assert node.pidfile == "/run/w1.pid"
    assert node.logfile == "/log/w1@box.log"
    assert node.expand("%n-%h.out") == "w1-box.out"


def test_multi_sets_the_node_name_and_detach_itself() -> None:
    [node] = nodes("w1 -n other -D -c 1")

    assert node.arguments == ("-c", "1")


def test_an_option_for_no_node_is_refused() -> None:
    with pytest.raises(ValueError, match="-c:w9 names none of the nodes"):
        nodes("w1 w2 -c:w9 4")

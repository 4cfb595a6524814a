"""The nodes a ``celeriac multi`` command line names, and each one's worker options (pure).

Celery's syntax, so init scripts and systemd units written for ``celery multi`` carry over:

- node names (``w1 w2``, or ``w1@host``), or a count (``3`` names ``celery1`` to
  ``celery3``); no name at all is the single node ``celery``;
- options for every node: ``-c 3``, ``--loglevel=INFO``, ``-E`` (a short option takes the
  next argument as its value unless that starts with ``-``; a long one takes ``=value``);
- options for some nodes: ``-c:w1 4``, ``-Q:1-3 images``, ``-Q:1,4 video`` (by name or by
  position, from 1), which win over the same option given for every node.

``--pidfile`` and ``--logfile`` default to ``%n.pid`` and ``%n%I.log``; ``%n``, ``%h``,
``%p`` and ``%d`` are expanded per node here (``%I``, the pool process, by the worker).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from celeriac.log import node_format

__all__ = ["Node", "parse_nodes"]

DEFAULT_PIDFILE = "%n.pid"
DEFAULT_LOGFILE = "%n%I.log"
PIDFILE_KEYS = ("--pidfile",)
LOGFILE_KEYS = ("--logfile", "-f")
# Options that name the node or detach it: multi sets them itself.
OWN_KEYS = ("-n", "--hostname", "-D", "--detach")


@dataclass(frozen=True)
class Node:
    """One worker of a ``multi`` command: its node name, files and worker arguments."""

    name: str
    pidfile: str
    logfile: str
    arguments: tuple[str, ...] = field(default=())

    @property
    def short_name(self) -> str:
        """The name before ``@``."""
        return self.name.partition("@")[0]

    def expand(self, template: str) -> str:
        """Expand ``%n``, ``%h``, ``%p`` and ``%d`` for this node (``multi expand``)."""
        return node_format(template, self.name)


@dataclass
class _Option:
    key: str
    value: str | None
    selector: str | None


def parse_nodes(arguments: list[str], host: str | None = None) -> list[Node]:
    """The nodes ``arguments`` (everything after ``multi <command>``) describe.

    Raises:
        ValueError: an option for some nodes names none of them.
    """
    host = host or socket.gethostname()
    names, options = _split(arguments)
    nodes = [name if "@" in name else f"{name}@{host}" for name in _node_names(names)]
    targets: list[tuple[_Option, set[int] | None]] = []
    for option in options:
        positions = None
        if option.selector is not None:
            positions = _selected_positions(option.selector, nodes)
            if not positions:
                raise ValueError(f"{option.key}:{option.selector} names none of the nodes")
        targets.append((option, positions))
    return [_node(name, position, targets) for position, name in enumerate(nodes, start=1)]


def _split(arguments: list[str]) -> tuple[list[str], list[_Option]]:
    names: list[str] = []
    options: list[_Option] = []
    position = 0
    while position < len(arguments):
        argument = arguments[position]
        if argument.startswith("--"):
            key, equals, value = argument.partition("=")
            options.append(_option(key, value if equals else None))
        elif argument.startswith("-") and len(argument) > 1:
            value = None
            following = arguments[position + 1] if position + 1 < len(arguments) else None
            if following is not None and not following.startswith("-"):
                value = following
                position += 1
            options.append(_option(argument, value))
        else:
            names.append(argument)
        position += 1
    return names, options


def _option(key: str, value: str | None) -> _Option:
    key, colon, selector = key.partition(":")
    return _Option(key, value, selector if colon else None)


def _node_names(names: list[str]) -> list[str]:
    if not names:
        return ["celery"]
    if len(names) == 1 and names[0].isdigit():
        return [f"celery{number}" for number in range(1, int(names[0]) + 1)]
    return names


def _selected_positions(selector: str, nodes: list[str]) -> set[int]:
    """Positions (from 1) a selector such as ``1-3``, ``1,4`` or ``w1,w2`` names."""
    chosen: set[int] = set()
    shorts = [name.partition("@")[0] for name in nodes]
    for part in selector.split(","):
        first, dash, last = part.partition("-")
        if dash and first.isdigit() and last.isdigit():
            chosen.update(range(int(first), int(last) + 1))
        elif part.isdigit():
            chosen.add(int(part))
        else:
            chosen.update(
                index for index, name in enumerate(nodes, 1) if part in (name, shorts[index - 1])
            )
    return {index for index in chosen if 1 <= index <= len(nodes)}


def _node(name: str, position: int, targets: list[tuple[_Option, set[int] | None]]) -> Node:
    """The node's own options: those for every node, then those for it, which win."""
    chosen: dict[str, str | None] = {}
    for option, positions in targets:
        if positions is None:
            chosen[option.key] = option.value
    for option, positions in targets:
        if positions is not None and position in positions:
            chosen[option.key] = option.value
    pidfile = _take(chosen, PIDFILE_KEYS) or DEFAULT_PIDFILE
    logfile = _take(chosen, LOGFILE_KEYS) or DEFAULT_LOGFILE
    for key in OWN_KEYS:
        chosen.pop(key, None)
    arguments: list[str] = []
    for key, value in chosen.items():
        if value is None:
            arguments.append(key)
        elif key.startswith("--"):
            arguments.append(f"{key}={value}")
        else:
            arguments += [key, value]
    return Node(name, node_format(pidfile, name), node_format(logfile, name), tuple(arguments))


def _take(chosen: dict[str, str | None], keys: tuple[str, ...]) -> str | None:
    found = None
    for key in keys:
        if key in chosen:
            found = chosen.pop(key) or found
    return found

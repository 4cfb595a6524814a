"""DependencyGraph: a small directed graph, where Celery users import it (``celery.utils.graph``).

``AsyncResult.build_graph`` returns one: each result points at the results its task
started. It keeps only what that needs: adjacency, iteration and Graphviz output.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

T = TypeVar("T", bound=Hashable)


class DependencyGraph(Generic[T]):
    """Nodes in insertion order, each with the list of nodes it points at.

    ``formatter`` turns a node into its label in ``to_dot`` (``str`` by default).
    """

    def __init__(
        self,
        it: Iterable[tuple[T, Iterable[T]]] = (),
        formatter: Callable[[T], str] | None = None,
    ) -> None:
        self.adjacent: dict[T, list[T]] = {}
        self.formatter: Callable[[T], str] = formatter or str
        for node, targets in it:
            self.add_arc(node)
            for target in targets:
                self.add_edge(node, target)

    def add_arc(self, obj: T) -> None:
        """Add a node, with no edges yet; a node already present is left as it is."""
        self.adjacent.setdefault(obj, [])

    def add_edge(self, A: T, B: T) -> None:
        """Add an edge from ``A`` to ``B``, adding either node if it is missing."""
        self.add_arc(B)
        self.adjacent.setdefault(A, []).append(B)

    def edges(self) -> Iterator[T]:
        """Yield every node that points at another."""
        return (node for node, targets in self.adjacent.items() if targets)

    def items(self) -> Iterator[tuple[T, list[T]]]:
        """Yield (node, nodes it points at) pairs."""
        return iter(self.adjacent.items())

    def to_dot(self, fh: SupportsWrite[str], formatter: Callable[[T], str] | None = None) -> None:
        """Write the graph to ``fh`` in Graphviz's dot language."""
        label = formatter or self.formatter
        names = {node: f"n{index}" for index, node in enumerate(self.adjacent)}
        fh.write("digraph dependencies {\n")
        for node, name in names.items():
            fh.write(f'    {name} [label="{_escape(label(node))}"];\n')
        for node, targets in self.adjacent.items():
            for target in targets:
                fh.write(f"    {names[node]} -> {names[target]};\n")
        fh.write("}\n")

    def __getitem__(self, node: T) -> list[T]:
        return self.adjacent[node]

    def __contains__(self, obj: object) -> bool:
        return obj in self.adjacent

    def __iter__(self) -> Iterator[T]:
        return iter(self.adjacent)

    def __len__(self) -> int:
        return len(self.adjacent)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {len(self)} nodes>"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')

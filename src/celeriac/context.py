"""Context: the request of one task invocation, ``Task.request`` (seed 004).

Its attributes mirror the message headers (id, retries, eta, root_id, ...), so it is a
plain attribute bag rather than a fixed dataclass: custom headers a client sent become
attributes too, as in Celery.
"""

from __future__ import annotations

from typing import Any


class Context:
    """Task request variables; every attribute not set reads as its class default."""

    id: str | None = None
    args: Any = None
    kwargs: Any = None
    retries: int = 0
    is_eager: bool = False
    eta: str | None = None
    expires: str | None = None
    group: str | None = None
    group_index: int | None = None
    chord: Any = None
    chain: Any = None
    callbacks: Any = None
    errbacks: Any = None
    root_id: str | None = None
    parent_id: str | None = None
    correlation_id: str | None = None
    delivery_info: Any = None
    hostname: str | None = None
    origin: str | None = None
    reply_to: str | None = None
    timelimit: Any = None
    utc: bool = True
    called_directly: bool = True
    headers: Any = None
    properties: Any = None
    ignore_result: bool = False
    shadow: str | None = None
    taskset: str | None = None
    stamps: Any = None
    stamped_headers: Any = None
    replaced_task_nesting: int = 0
    loglevel: Any = None
    logfile: Any = None
    _protected: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.update(*args, **kwargs)
        if "children" not in self.__dict__:
            self.children: list[Any] = []

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set attributes from mappings and keyword arguments."""
        for mapping in args:
            self.__dict__.update(mapping)
        self.__dict__.update(kwargs)

    def get(self, key: str, default: Any = None) -> Any:
        """Return an attribute, or ``default`` if it is not set at all."""
        return getattr(self, key, default)

    def clear(self) -> None:
        """Forget every attribute set on this context."""
        self.__dict__.clear()
        self.children = []

    def as_dict(self) -> dict[str, Any]:
        """Return the attributes set on this context (not the class defaults)."""
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"<Context: {self.as_dict()!r}>"

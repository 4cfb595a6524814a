"""ResultSet and GroupResult (the results of a group), and ``result_from_tuple``.

``join_native`` (which ``get`` uses) first reads every member with one ``get_many`` per
backend, then waits only for the members not ready yet, in member order; ``join`` asks
each member in turn. Either way one deadline bounds the whole join. Members that already
know their outcome (EagerResults) are never read, so a group of them needs no backend.
A GroupResult is saved and restored in Celery's tuple form (wire protocol §7.1, §7.3).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

from celeriac.exceptions import DecodeError
from celeriac.result.async_result import AsyncResult, ResultBase, assert_will_not_block

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.base import Meta, ResultBackend, ResultTuple

Member: TypeAlias = "AsyncResult[Any] | GroupResult"
"""What a ResultSet holds: task results, or the results of nested groups."""


class ResultSet(ResultBase):
    """A list of results, waited for and inspected together."""

    def __init__(self, results: Iterable[Member], app: Celeriac | None = None) -> None:
        self._app = app
        self.results: list[Member] = list(results)

    @property
    def app(self) -> Celeriac:
        """The given app, else the first member's, else the current app."""
        if self._app is None:
            if self.results:
                self._app = self.results[0].app
            else:
                from celeriac.current import get_current_app

                self._app = get_current_app()
        return self._app

    @app.setter
    def app(self, app: Celeriac) -> None:
        self._app = app

    @property
    def backend(self) -> ResultBackend:
        """The given app's backend, else the first member's."""
        if self._app is None and self.results:
            return self.results[0].backend
        return self.app.backend

    @property
    def supports_native_join(self) -> bool:
        """True: ``join_native`` reads all members in one round trip per backend."""
        return True

    def add(self, result: Member) -> None:
        """Add ``result`` unless it is already a member."""
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: Member | str) -> None:
        """Remove a member, given as a result or an id; raise ``KeyError`` if absent."""
        for index, member in enumerate(self.results):
            if member == result:
                del self.results[index]
                return
        raise KeyError(result)

    def discard(self, result: Member | str) -> None:
        """Remove a member if present."""
        with contextlib.suppress(KeyError):
            self.remove(result)

    def update(self, results: Iterable[Member]) -> None:
        """Add every result not already a member."""
        self.results.extend(result for result in results if result not in self.results)

    def clear(self) -> None:
        """Remove every member."""
        self.results.clear()

    def successful(self) -> bool:
        """True if every member succeeded."""
        self._read_stored_states()
        return all(result.successful() for result in self.results)

    def failed(self) -> bool:
        """True if any member failed."""
        self._read_stored_states()
        return any(result.failed() for result in self.results)

    def waiting(self) -> bool:
        """True if any member is not ready yet."""
        self._read_stored_states()
        return any(not result.ready() for result in self.results)

    def ready(self) -> bool:
        """True once every member is ready (succeeded, failed or revoked)."""
        self._read_stored_states()
        return all(result.ready() for result in self.results)

    def completed_count(self) -> int:
        """How many members succeeded."""
        self._read_stored_states()
        return sum(1 for result in self.results if result.successful())

    def maybe_throw(
        self, callback: Callable[[str, Any], None] | None = None, propagate: bool = True
    ) -> None:
        """Raise the exception of the first failed member, in member order."""
        self._read_stored_states()
        for result in self.results:
            result.maybe_throw(callback=callback, propagate=propagate)

    maybe_reraise = maybe_throw

    def forget(self) -> None:
        """Delete every member's stored result."""
        for result in self.results:
            result.forget()

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Revoke every member with one broadcast (see ``AsyncResult.revoke``)."""
        return self.app.control.revoke(
            [result.id for result in self.results],
            connection=connection,
            terminate=terminate,
            signal=signal or "SIGTERM",
            reply=wait,
            timeout=1.0 if timeout is None else timeout,
        )

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], None] | None = None,
        no_ack: bool = True,
        on_message: Callable[[Meta], None] | None = None,
        disable_sync_subtasks: bool = True,
        on_interval: Callable[[], None] | None = None,
    ) -> list[Any]:
        """Wait for every member and return their values: ``join_native``."""
        return self.join_native(
            timeout=timeout,
            propagate=propagate,
            interval=interval,
            callback=callback,
            no_ack=no_ack,
            on_message=on_message,
            on_interval=on_interval,
            disable_sync_subtasks=disable_sync_subtasks,
        )

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], None] | None = None,
        no_ack: bool = True,
        on_message: Callable[[Meta], None] | None = None,
        disable_sync_subtasks: bool = True,
        on_interval: Callable[[], None] | None = None,
    ) -> list[Any]:
        """Wait for each member in turn and return their values in member order.

        ``timeout`` bounds the whole join: ``celeriac.exceptions.TimeoutError`` is raised
        once it has passed with a member still not ready. With ``propagate`` the first
        failed member, in member order, re-raises its exception. A nested group's value
        is the list of its values. With ``callback``, it is called with each member's id
        and value, and the returned list is empty.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._join_members(
            deadline, propagate, interval, callback, no_ack, on_message, on_interval
        )

    def join_native(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], None] | None = None,
        no_ack: bool = True,
        on_message: Callable[[Meta], None] | None = None,
        on_interval: Callable[[], None] | None = None,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """Do what ``join`` does, reading every member first in one round trip per backend."""
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._read_stored_states()
        return self._join_members(
            deadline, propagate, interval, callback, no_ack, on_message, on_interval
        )

    def _join_members(
        self,
        deadline: float | None,
        propagate: bool,
        interval: float,
        callback: Callable[[str, Any], None] | None,
        no_ack: bool,
        on_message: Callable[[Meta], None] | None,
        on_interval: Callable[[], None] | None,
    ) -> list[Any]:
        values: list[Any] = []
        for member in self.results:
            value: Any
            if isinstance(member, ResultSet):
                value = member._join_members(
                    deadline, propagate, interval, None, no_ack, on_message, on_interval
                )
            else:
                time_left = None if deadline is None else max(0.0, deadline - time.monotonic())
                value = member.get(
                    timeout=time_left,
                    propagate=propagate,
                    interval=interval,
                    no_ack=no_ack,
                    on_message=on_message,
                    on_interval=on_interval,
                    disable_sync_subtasks=False,
                )
            if callback is not None:
                callback(member.id, value)
            else:
                values.append(value)
        return values

    def _leaves(self) -> Iterator[AsyncResult[Any]]:
        for member in self.results:
            if isinstance(member, ResultSet):
                yield from member._leaves()
            else:
                yield member

    def _read_stored_states(self) -> None:
        """Read every task result not known to be ready, with one ``get_many`` per backend.

        Those found ready keep what was read, so checking or waiting for them afterwards
        costs no round trip.
        """
        unknown: dict[int, tuple[ResultBackend, list[AsyncResult[Any]]]] = {}
        for leaf in self._leaves():
            if leaf._cache is None:
                backend = leaf.backend
                unknown.setdefault(id(backend), (backend, []))[1].append(leaf)
        for backend, leaves in unknown.values():
            stored = backend.get_many([leaf.id for leaf in leaves])
            for leaf in leaves:
                meta = stored.get(leaf.id)
                if meta is not None:
                    leaf._set_cache(meta)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[Member]:
        return iter(self.results)

    def __getitem__(self, index: int) -> Member:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    def __repr__(self) -> str:
        ids = ", ".join(result.id for result in self.results)
        return f"<{type(self).__name__}: [{ids}]>"

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.results,)


class GroupResult(ResultSet):
    """The results of a group, under the group's id; it can be saved and restored by id.

    Without ``id`` one is generated, so every GroupResult can be saved.
    """

    def __init__(
        self,
        id: str | None = None,
        results: Iterable[Member] | None = None,
        parent: AsyncResult[Any] | GroupResult | None = None,
        app: Celeriac | None = None,
    ) -> None:
        super().__init__(results if results is not None else [], app=app)
        self.id = str(id) if id is not None else str(uuid.uuid4())
        self.parent = parent

    @property
    def children(self) -> list[Member]:
        """The members: what the group's tasks return."""
        return self.results

    def save(self, backend: ResultBackend | None = None) -> None:
        """Store the group's tuple so ``GroupResult.restore(id)`` finds it (Celery's format)."""
        (backend or self.backend).save_group(self.id, _as_lists(self.as_tuple()))

    def delete(self, backend: ResultBackend | None = None) -> None:
        """Delete the saved group (its members' results stay)."""
        (backend or self.backend).delete_group(self.id)

    @classmethod
    def restore(
        cls, id: str, backend: ResultBackend | None = None, app: Celeriac | None = None
    ) -> GroupResult | None:
        """Return the group saved under ``id``, or None if none is (still) saved.

        Raises:
            DecodeError: what is saved under ``id`` is not a group's result tuple.
        """
        if backend is None:
            if app is None:
                from celeriac.current import get_current_app

                app = get_current_app()
            backend = app.backend
        data = backend.restore_group(id)
        if data is None:
            return None
        restored = _rebuild(data, app, backend)
        if not isinstance(restored, GroupResult):
            raise DecodeError(f"saved group {id!r} is not a group result: {data!r}")
        return restored

    def as_tuple(self) -> tuple[Any, ...]:
        """The nested-tuple form: ``((id, parent tuple), [member tuples])``."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), [result.as_tuple() for result in self.results]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return (
                other.id == self.id
                and other.results == self.results
                and other.parent == self.parent
            )
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        ids = ", ".join(result.id for result in self.results)
        return f"<{type(self).__name__}: {self.id} [{ids}]>"

    def __str__(self) -> str:
        return self.id

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.id, self.results, self.parent)


def result_from_tuple(data: Any, app: Celeriac | None = None) -> Member:
    """Rebuild a result from its tuple form (wire protocol §7.1).

    ``[[id, parent], null]`` is an AsyncResult, ``[[group_id, parent], [members]]`` a
    GroupResult; a result given instead of a tuple is returned as it is.
    """
    return _rebuild(data, app, None)


def _rebuild(data: Any, app: Celeriac | None, backend: ResultBackend | None) -> Member:
    if isinstance(data, AsyncResult | GroupResult):
        return data
    head, members = data
    # Results stored by very old Celery versions have a bare id where the pair now is.
    result_id, parent = head if isinstance(head, list | tuple) else (head, None)
    parent_result = _rebuild(parent, app, backend) if parent else None
    if members is not None:
        return GroupResult(
            result_id,
            [_rebuild(member, app, backend) for member in members],
            parent=parent_result,
            app=app,
        )
    return AsyncResult(result_id, backend=backend, app=app, parent=parent_result)


def _as_lists(value: Any) -> ResultTuple:
    """The tuple form as nested lists, as every serializer gives it back."""
    return [_as_lists(item) if isinstance(item, tuple | list) else item for item in value]

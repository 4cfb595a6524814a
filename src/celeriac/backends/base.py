"""The ResultBackend interface every result store implements.

A backend stores result-meta dicts (built by ``celeriac.protocol.result_meta``) under a
task id and gives them back. It must never overwrite a stored SUCCESS (wire protocol
§7.1), and ``wait`` returns as soon as a ready state is stored.

It also keeps saved group results (``GroupResult.save``) and the counter of each chord
(wire protocol §7.3): the worker that finishes a header task reports it with
``chord_part_done``, the client reports the header's size with ``set_chord_size``, and
whichever of those events completes the chord hands its caller a claim, to exactly one
caller among all processes. The claimant sends the body with the header results in
``group_index`` order (arrival order where a backend is configured, as Celery's Redis
backend can be, to keep no order), then calls ``finish_chord``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from celeriac.exceptions import ChordsNotSupported, OperationalError
from celeriac.states import PROPAGATE_STATES

Meta = dict[str, Any]

ResultTuple = list[Any]
"""A result in Celery's tuple form (wire protocol §7.1): ``[[group_id, parent], [members]]``."""

CHORD_CLAIM_EXPIRES = 6.0
"""Seconds a chord claim lasts, as Celery 5.7's (twice its 3 s join timeout).

A claim that runs out before ``finish_chord`` lets a redelivered header task claim the
chord again: that is how a chord whose claimant died still fires its body.
"""

CHORD_DONE_EXPIRES = 300.0
"""Seconds a finished chord ignores late header results, as Celery 5.7's ``.c`` "done"."""


@dataclass(frozen=True, slots=True)
class ChordPart:
    """One finished header task, as the chord counter recorded it.

    ``result`` is the stored form (an exception is its ``exc_type`` dict), and
    ``group_index`` is None for a header task that was sent without one.
    """

    task_id: str
    group_index: int | None
    state: str
    result: Any

    @property
    def has_failed(self) -> bool:
        """True if the state fails the chord (FAILURE or REVOKED)."""
        return self.state in PROPAGATE_STATES


@dataclass(frozen=True, slots=True)
class ChordProgress:
    """What a chord counter knows after one reported event.

    ``size`` is the header size set by the client plus what ``add_to_chord`` added, or
    None while the client has not set it. ``claim`` is set for the one caller that must
    send the body; only that caller gets ``parts``, every recorded header result in
    ``group_index`` order. ``is_finished`` says the chord already fired and was cleaned
    up, so the event was ignored (a late redelivery).
    """

    ready: int
    size: int | None
    claim: str | None = None
    parts: tuple[ChordPart, ...] = ()
    is_finished: bool = False

    @property
    def must_fire(self) -> bool:
        """True for the caller that must send the body, then call ``finish_chord``."""
        return self.claim is not None

    @property
    def results(self) -> list[Any]:
        """The header results, in ``group_index`` order: the body's first argument."""
        return [part.result for part in self.parts]

    @property
    def first_failure(self) -> ChordPart | None:
        """The failed header task of lowest ``group_index``, which fails the chord."""
        return next((part for part in self.parts if part.has_failed), None)


LONGEST_WAIT = 60.0
"""Seconds a waiter with neither a timeout nor an interval goes without reading again."""


def next_wait(remaining: float | None, interval: float) -> float:
    """How long ``wait`` may block before it reads the result again.

    ``remaining`` is the time left of its timeout (None: no timeout); ``interval`` the
    caller's polling interval, where 0 or less means "only when woken".
    """
    if interval <= 0:
        return remaining if remaining is not None else LONGEST_WAIT
    return interval if remaining is None else min(remaining, interval)


class BackendError(OperationalError):
    """The result store could not be reached or refused an operation."""


class BackendUnavailable(BackendError):
    """The result store could not be reached: the same call may work once it is back."""


@runtime_checkable
class ResultBackend(Protocol):
    """A place where workers store task outcomes and clients read them."""

    url: str

    def store(self, task_id: str, meta: Meta) -> None:
        """Store ``meta`` as the task's latest state, unless SUCCESS is already stored."""
        ...

    def get(self, task_id: str) -> Meta | None:
        """Return the stored meta, or None if nothing is stored (PENDING)."""
        ...

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Meta]:
        """Return the stored meta of each id that has one."""
        ...

    def wait(self, task_id: str, timeout: float | None, interval: float) -> Meta:
        """Block until a ready state is stored; raise ``TimeoutError`` after ``timeout``."""
        ...

    def forget(self, task_id: str) -> None:
        """Delete what is stored for the task."""
        ...

    def cleanup(self) -> int:
        """Delete results older than ``result_expires``; return how many."""
        ...

    def save_group(self, group_id: str, result: ResultTuple) -> None:
        """Store a group's result tuple, as ``GroupResult.save`` does, replacing any stored."""
        ...

    def restore_group(self, group_id: str) -> ResultTuple | None:
        """Return the group's saved result tuple, or None if none is (still) stored."""
        ...

    def delete_group(self, group_id: str) -> None:
        """Delete the group's saved result tuple."""
        ...

    def set_chord_size(
        self, group_id: str, size: int, *, claim_expires: float = CHORD_CLAIM_EXPIRES
    ) -> ChordProgress:
        """Record how many header results the chord waits for; the client calls it once.

        Setting the size starts a new run of the chord: it drops a finished or claimed
        state that an earlier run with the same group id left. When every header task
        has already reported, the returned progress claims the chord for the caller.
        """
        ...

    def add_to_chord(self, group_id: str, count: int = 1) -> None:
        """Make the chord wait for ``count`` more header results (Celery's ``.t``)."""
        ...

    def chord_part_done(
        self,
        group_id: str,
        task_id: str,
        group_index: int | None,
        state: str,
        result: Any,
        *,
        claim_expires: float = CHORD_CLAIM_EXPIRES,
    ) -> ChordProgress:
        """Record a finished header task, atomically, and claim the chord if it completes.

        A worker calls it after storing the task's own result, with the stored state
        and result (an exception in its stored dict form). A second report of the same
        ``(task_id, group_index)`` is counted once. Among all concurrent callers, the
        one whose event completes the chord gets the claim; nobody else does while the
        claim lasts ``claim_expires`` seconds.
        """
        ...

    def finish_chord(self, group_id: str, claim: str) -> bool:
        """Delete the chord's parts and counters once its body is sent; mark it finished.

        Returns False, and deletes nothing, when ``claim`` no longer holds the chord
        (it ran out and another caller may have claimed it).
        """
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class RepliesByMessage(Protocol):
    """A result backend that sends each state to the caller's ``reply_to`` queue instead of
    storing it (``rpc://``): the worker names the queue, the client declares it first.

    Found by its ``store_reply`` attribute (see :func:`replies_by_message`): an
    ``isinstance`` check of a runtime protocol costs tens of microseconds a task.
    """

    def store_reply(self, task_id: str, meta: Meta, reply_to: str | None) -> None:
        """Send ``meta`` to the queue ``reply_to``; None means nobody to tell."""
        ...

    def ensure_reply_queue(self) -> None:
        """Make sure this client's reply queue exists and is read: before sending a task."""
        ...


def replies_by_message(backend: object) -> RepliesByMessage | None:
    """``backend`` if it sends results as messages (``rpc://``), else None."""
    return backend if hasattr(backend, "store_reply") else None  # type: ignore[return-value]


class RefusesChords:
    """The chord half of :class:`ResultBackend` for a backend that keeps no counters.

    A chord is counted in the result store; a backend without one (no backend, or
    ``rpc://``) names why in ``chords_refusal``, and the first chord call, made when the
    chord is applied, raises :class:`ChordsNotSupported` with it.
    """

    chords_refusal: str

    def set_chord_size(
        self, group_id: str, size: int, *, claim_expires: float = CHORD_CLAIM_EXPIRES
    ) -> ChordProgress:
        """Refuse: there is nowhere to count the chord."""
        raise ChordsNotSupported(self.chords_refusal)

    def add_to_chord(self, group_id: str, count: int = 1) -> None:
        """Refuse: there is nowhere to count the chord."""
        raise ChordsNotSupported(self.chords_refusal)

    def chord_part_done(
        self,
        group_id: str,
        task_id: str,
        group_index: int | None,
        state: str,
        result: Any,
        *,
        claim_expires: float = CHORD_CLAIM_EXPIRES,
    ) -> ChordProgress:
        """Refuse: there is nowhere to count the chord."""
        raise ChordsNotSupported(self.chords_refusal)

    def finish_chord(self, group_id: str, claim: str) -> bool:
        """Refuse: there is nowhere to count the chord."""
        raise ChordsNotSupported(self.chords_refusal)

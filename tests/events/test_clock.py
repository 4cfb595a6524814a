"""LamportClock: forward on send, adjust on receive, safe across threads."""

from __future__ import annotations

import threading

from celeriac.events.clock import LamportClock


def test_forward_advances_by_one_and_returns_new_value() -> None:
    clock = LamportClock()

    values = [clock.forward(), clock.forward()]

    assert values == [1, 2]
    assert clock.value == 2


def test_adjust_takes_max_of_local_and_received_plus_one() -> None:
    clock = LamportClock(initial_value=5)

    assert clock.adjust(10) == 11
    assert clock.adjust(3) == 12
    assert clock.value == 12


def test_forward_from_many_threads_loses_no_tick() -> None:
    clock = LamportClock()

    def tick() -> None:
        for _ in range(2000):
            clock.forward()

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert clock.value == 8000


def test_repr_shows_value() -> None:
    clock = LamportClock(initial_value=7)

    assert repr(clock) == "<LamportClock: 7>"
    assert str(clock) == "7"

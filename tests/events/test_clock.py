"""LamportClock: forward on send, adjust on receive, safe across threads and forks."""

from __future__ import annotations

import os
import threading
import time

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


def test_forked_child_can_tick_though_the_lock_was_held_at_the_fork() -> None:
    clock = LamportClock(initial_value=3)
    held = threading.Event()
    release = threading.Event()

    def hold_the_lock() -> None:
        with clock._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait(5)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if clock.forward() == 4 else 1)
    release.set()
    holder.join(timeout=5)

    deadline = time.monotonic() + 5
    finished, status = os.waitpid(pid, os.WNOHANG)
    while not finished and time.monotonic() < deadline:
        time.sleep(0.02)
        finished, status = os.waitpid(pid, os.WNOHANG)
    if not finished:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert finished == pid, "the child hung on the lock it inherited"
    assert os.waitstatus_to_exitcode(status) == 0


def test_repr_shows_value() -> None:
    clock = LamportClock(initial_value=7)

    assert repr(clock) == "<LamportClock: 7>"
    assert str(clock) == "7"

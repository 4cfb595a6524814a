"""Signal: connect forms, weak references, sender filtering, dispatch_uid, send and safety."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from typing import Any

import pytest

from celeriac.dispatch import RETRY_DELAYS, Signal


class Recorder:
    """A receiver that remembers what it was sent."""

    def __init__(self, response: object = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.response = response

    def __call__(self, **kwargs: Any) -> object:
        self.calls.append(kwargs)
        return self.response

    def method(self, **kwargs: Any) -> object:
        self.calls.append(kwargs)
        return self.response


def test_connect_as_plain_call_returns_receiver_and_receives_sends() -> None:
    signal = Signal(name="plain")
    recorder = Recorder()

    returned = signal.connect(recorder)
    signal.send(sender="someone", value=1)

    assert returned is recorder
    assert recorder.calls == [{"signal": signal, "sender": "someone", "value": 1}]


def test_connect_as_decorator_without_arguments_leaves_function_usable() -> None:
    signal = Signal(name="decorated")
    calls: list[object] = []

    @signal.connect
    def handler(sender: object = None, **kwargs: Any) -> str:
        calls.append(sender)
        return "handled"

    responses = signal.send(sender="a")

    assert responses == [(handler, "handled")]
    assert handler(sender="direct") == "handled"
    assert calls == ["a", "direct"]


def test_connect_as_decorator_with_sender_filters_by_sender() -> None:
    signal = Signal(name="decorated_with_sender")
    calls: list[object] = []

    @signal.connect(sender="tasks.add")
    def handler(sender: object = None, **kwargs: Any) -> None:
        calls.append(sender)

    signal.send(sender="tasks.mul")
    signal.send(sender="tasks.add")

    assert calls == ["tasks.add"]
    assert callable(handler)


def test_connect_as_decorator_with_empty_parentheses() -> None:
    signal = Signal(name="parentheses")
    calls: list[object] = []

    @signal.connect()
    def handler(**kwargs: Any) -> None:
        calls.append(kwargs["sender"])

    signal.send(sender=1)

    assert calls == [1]


def test_weak_receiver_is_dropped_once_garbage_collected() -> None:
    signal = Signal(name="weak")
    recorder = Recorder()
    signal.connect(recorder)

    del recorder
    gc.collect()

    assert signal.send(sender=None) == []
    assert not signal.has_listeners()


def test_strong_receiver_is_kept_without_other_references() -> None:
    signal = Signal(name="strong")
    calls: list[object] = []
    signal.connect(lambda **kwargs: calls.append(kwargs["sender"]), weak=False)

    gc.collect()
    signal.send(sender="kept")

    assert calls == ["kept"]


def test_bound_method_receiver_lives_as_long_as_its_instance() -> None:
    signal = Signal(name="bound")
    recorder = Recorder(response="from method")
    signal.connect(recorder.method)

    gc.collect()
    first_responses = [response for _, response in signal.send(sender=None)]
    calls = recorder.calls
    del recorder
    gc.collect()
    second = signal.send(sender=None)

    assert first_responses == ["from method"]
    assert len(calls) == 1
    assert second == []


def test_bound_methods_of_two_instances_are_two_receivers() -> None:
    signal = Signal(name="two_instances")
    first, second = Recorder(), Recorder()

    signal.connect(first.method)
    signal.connect(second.method)
    signal.send(sender=None)

    assert len(first.calls) == 1
    assert len(second.calls) == 1


def test_connecting_the_same_receiver_twice_is_a_no_op() -> None:
    signal = Signal(name="twice")
    recorder = Recorder()

    signal.connect(recorder)
    signal.connect(recorder)
    signal.send(sender=None)

    assert len(recorder.calls) == 1


def test_same_receiver_for_two_senders_is_two_connections() -> None:
    signal = Signal(name="two_senders")
    recorder = Recorder()

    signal.connect(recorder, sender="a")
    signal.connect(recorder, sender="b")
    signal.send(sender="a")
    signal.send(sender="b")

    assert [call["sender"] for call in recorder.calls] == ["a", "b"]


def test_dispatch_uid_makes_a_second_connect_a_no_op() -> None:
    signal = Signal(name="uid")
    first, second = Recorder(), Recorder()

    signal.connect(first, dispatch_uid="only-once")
    signal.connect(second, dispatch_uid="only-once")
    signal.send(sender=None)

    assert len(first.calls) == 1
    assert second.calls == []


def test_disconnect_by_dispatch_uid() -> None:
    signal = Signal(name="uid_disconnect")
    recorder = Recorder()
    signal.connect(recorder, dispatch_uid="uid")

    removed = signal.disconnect(dispatch_uid="uid")
    signal.send(sender=None)

    assert removed
    assert recorder.calls == []


def test_string_sender_matches_by_value_not_identity() -> None:
    signal = Signal(name="string_sender")
    recorder = Recorder()
    connected_name = "proj.tasks.add"
    signal.connect(recorder, sender=connected_name)
    built_at_runtime = "".join(["proj.tasks.", "add"])

    signal.send(sender=built_at_runtime)
    signal.send(sender="proj.tasks.mul")

    assert built_at_runtime is not connected_name
    assert [call["sender"] for call in recorder.calls] == ["proj.tasks.add"]


def test_bytes_sender_matches_by_value() -> None:
    signal = Signal(name="bytes_sender")
    recorder = Recorder()
    signal.connect(recorder, sender=b"node")

    signal.send(sender=bytes([110, 111, 100, 101]))

    assert len(recorder.calls) == 1


class AlwaysEqual:
    """An object equal to every other: identity, not equality, must select it."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


def test_object_sender_matches_by_identity_not_equality() -> None:
    signal = Signal(name="object_sender")
    recorder = Recorder()
    chosen, lookalike = AlwaysEqual(), AlwaysEqual()
    signal.connect(recorder, sender=chosen)

    signal.send(sender=lookalike)
    signal.send(sender=chosen)

    assert [call["sender"] for call in recorder.calls] == [chosen]
    assert recorder.calls[0]["sender"] is chosen


def test_receiver_without_sender_gets_every_send() -> None:
    signal = Signal(name="any_sender")
    everything, only_add = Recorder(), Recorder()
    signal.connect(everything)
    signal.connect(only_add, sender="add")

    signal.send(sender="add")
    signal.send(sender="mul")
    signal.send(sender=None)

    assert [call["sender"] for call in everything.calls] == ["add", "mul", None]
    assert [call["sender"] for call in only_add.calls] == ["add"]


def test_disconnect_removes_receiver_and_reports_it() -> None:
    signal = Signal(name="disconnect")
    recorder = Recorder()
    signal.connect(recorder, sender="a")

    wrong_sender = signal.disconnect(recorder, sender="b")
    removed = signal.disconnect(recorder, sender="a")
    removed_again = signal.disconnect(recorder, sender="a")
    signal.send(sender="a")

    assert not wrong_sender
    assert removed
    assert not removed_again
    assert recorder.calls == []


def test_disconnect_without_receiver_or_uid_removes_nothing() -> None:
    signal = Signal(name="disconnect_nothing")
    recorder = Recorder()
    signal.connect(recorder)

    assert not signal.disconnect()
    assert signal.has_listeners()


def test_send_returns_receivers_and_responses_in_connect_order() -> None:
    signal = Signal(name="responses")
    first, second = Recorder(response=1), Recorder(response=2)
    signal.connect(first)
    signal.connect(second)

    responses = signal.send(sender=None, value="x")

    assert responses == [(first, 1), (second, 2)]


def test_send_without_receivers_returns_empty_list() -> None:
    signal = Signal(name="empty")

    assert signal.send(sender="anyone", value=1) == []
    assert signal.send_robust(sender="anyone") == []


def test_raising_receiver_is_logged_and_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    signal = Signal(name="raising")
    error = ZeroDivisionError("boom")

    def broken(**kwargs: Any) -> None:
        raise error

    after = Recorder(response="still ran")
    signal.connect(broken)
    signal.connect(after)

    with caplog.at_level(logging.ERROR, logger="celeriac.dispatch"):
        responses = signal.send(sender=None)

    assert responses == [(broken, error), (after, "still ran")]
    [record] = [record for record in caplog.records if record.name == "celeriac.dispatch"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[1] is error
    assert "boom" in record.getMessage()


def test_send_robust_is_send() -> None:
    signal = Signal(name="robust")
    recorder = Recorder(response="ok")
    signal.connect(recorder)

    assert signal.send_robust(sender=None) == [(recorder, "ok")]


def test_retry_receiver_is_called_again_until_it_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    signal = Signal(name="retry")
    attempts: list[int] = []

    def flaky(**kwargs: Any) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return "connected"

    signal.connect(flaky, retry=True)
    with caplog.at_level(logging.WARNING, logger="celeriac.dispatch"):
        responses = signal.send(sender=None)

    assert responses == [(flaky, "connected")]
    assert len(attempts) == 3
    assert [record.levelno for record in caplog.records] == [logging.WARNING] * 2


def test_retry_receiver_gives_up_after_its_last_delay(caplog: pytest.LogCaptureFixture) -> None:
    signal = Signal(name="retry_gives_up")
    attempts: list[int] = []

    def always_failing(**kwargs: Any) -> None:
        attempts.append(1)
        raise ConnectionError("down")

    signal.connect(always_failing, retry=True)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="celeriac.dispatch"):
        [(_, response)] = signal.send(sender=None)
    elapsed = time.monotonic() - started

    assert isinstance(response, ConnectionError)
    assert len(attempts) == len(RETRY_DELAYS) + 1
    assert sum(RETRY_DELAYS) <= elapsed < sum(RETRY_DELAYS) + 2
    assert caplog.records[-1].levelno == logging.ERROR


def test_retry_receiver_is_held_strongly() -> None:
    signal = Signal(name="retry_strong")
    calls: list[object] = []
    signal.connect(lambda **kwargs: calls.append(1), retry=True)

    gc.collect()
    signal.send(sender=None)

    assert calls == [1]


def test_receiver_without_keyword_arguments_is_rejected() -> None:
    signal = Signal(name="strict")

    def no_kwargs(sender: object) -> None:
        return None

    with pytest.raises(ValueError, match="keyword arguments"):
        signal.connect(no_kwargs)
    assert not signal.has_listeners()


def test_non_callable_receiver_is_rejected() -> None:
    signal = Signal(name="not_callable")

    with pytest.raises(TypeError, match="not callable"):
        signal.connect("not a function")  # type: ignore[call-overload]


class SlottedReceiver:
    """A callable that cannot be weakly referenced."""

    __slots__ = ()

    def __call__(self, **kwargs: Any) -> str:
        return "slotted"


def test_receiver_that_cannot_be_weakly_referenced_needs_weak_false() -> None:
    signal = Signal(name="slotted")
    receiver = SlottedReceiver()

    with pytest.raises(TypeError, match="weak=False"):
        signal.connect(receiver)
    signal.connect(receiver, weak=False)

    assert signal.send(sender=None) == [(receiver, "slotted")]


def test_has_listeners_tells_whether_send_would_reach_someone() -> None:
    signal = Signal(name="listeners")
    recorder = Recorder()

    before = signal.has_listeners("add")
    signal.connect(recorder, sender="add")

    assert not before
    assert signal.has_listeners("add")
    assert not signal.has_listeners("mul")
    assert not signal.has_listeners()


def test_caching_signal_sees_receivers_connected_after_a_send() -> None:
    signal = Signal(name="cached", use_caching=True)
    first, second = Recorder(), Recorder()
    signal.connect(first, sender="add")
    signal.send(sender="add")

    signal.connect(second)
    signal.send(sender="add")
    signal.disconnect(first, sender="add")
    signal.send(sender="add")

    assert len(first.calls) == 2
    assert len(second.calls) == 2


def test_caching_signal_drops_dead_receivers() -> None:
    signal = Signal(name="cached_weak", use_caching=True)
    recorder = Recorder()
    signal.connect(recorder, sender="add")
    signal.send(sender="add")

    del recorder
    gc.collect()

    assert signal.send(sender="add") == []


def test_repr_shows_name_and_sorted_providing_args() -> None:
    signal = Signal(name="task_success", providing_args=["result", "extra"])

    assert repr(signal) == "<Signal: task_success providing_args={'extra', 'result'}>"
    assert repr(Signal(name="bare")) == "<Signal: bare providing_args=set()>"


def test_connect_and_send_from_many_threads() -> None:
    signal = Signal(name="threads")
    counter = Recorder()
    signal.connect(counter, weak=False)
    receivers = [Recorder() for _ in range(8)]
    barrier = threading.Barrier(len(receivers))
    errors: list[BaseException] = []

    def connect_then_send(receiver: Recorder) -> None:
        try:
            barrier.wait(timeout=5)
            signal.connect(receiver)
            for _ in range(200):
                signal.send(sender=None)
            signal.disconnect(receiver)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=connect_then_send, args=(r,)) for r in receivers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert len(counter.calls) == 200 * len(receivers)
    assert all(200 <= len(receiver.calls) <= 200 * len(receivers) for receiver in receivers)
    assert signal.send(sender=None) == [(counter, None)]


def test_receiver_may_connect_another_receiver_while_being_called() -> None:
    signal = Signal(name="reentrant")
    late = Recorder()

    def connect_late(**kwargs: Any) -> None:
        signal.connect(late, weak=False)

    signal.connect(connect_late)
    signal.send(sender=None)
    signal.send(sender=None)

    assert len(late.calls) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
# Python 3.12 warns when forking with other threads alive (pytest-xdist's); the
# child here only touches the signal, so the warning does not apply.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_can_connect_even_if_parent_held_the_lock() -> None:
    signal = Signal(name="fork")
    signal.connect(Recorder(response="parent"), weak=False)

    with signal._lock:
        pid = os.fork()
        if pid == 0:
            exit_code = 1
            try:
                child_recorder = Recorder(response="child")
                signal.connect(child_recorder)
                responses = [response for _, response in signal.send(sender=None)]
                exit_code = 0 if responses == ["parent", "child"] else 2
            finally:
                os._exit(exit_code)

    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child deadlocked on the signal's lock")

    assert os.waitstatus_to_exitcode(status) == 0

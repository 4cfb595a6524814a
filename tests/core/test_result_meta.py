"""Result meta dicts and exceptions in them, against results a Celery 5.7 worker stored.

The fixtures are values of ``celery-task-meta-<id>`` keys from celery-wire-captures.txt,
copied verbatim.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

import pytest

from celeriac import serialization, states
from celeriac.exceptions import (
    CeleriacError,
    ContentDisallowed,
    DecodeError,
    NotRegistered,
    Reject,
    SecurityError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
)
from celeriac.protocol.result_meta import (
    build_meta,
    decode_exception,
    encode_exception,
    pending_meta,
    result_from_meta,
)

# ---- results stored by Celery 5.7 ----

SUCCESS_META = (
    '{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], '
    '"date_done": "2026-11-21T19:01:45.865316+00:00", "name": "tasks.add", "args": [2, 3], '
    '"kwargs": {}, "worker": "w1@vm", "retries": 0, "queue": "celery", '
    '"task_id": "4c0aa0f9-b647-48bf-8a93-da31b2f0b56a"}'
)

FAILURE_META = (
    '{"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["bad thing"], '
    '"exc_module": "builtins"}, '
    '"traceback": "Traceback (most recent call last):\\n  File \\"/tmp/celspec/lib/python3.11/sit'
    'e-packages/celery/app/trace.py\\", line 564, in trace_task\\n    R = retval = fun(*args, '
    '**kwargs)\\n                 ^^^^^^^^^^^^^^^^^^^^\\n  File \\"/tmp/celspec/lib/python3.11/sit'
    'e-packages/celery/app/trace.py\\", line 883, '
    "in __protected_call__\\n    return self.run(*args, "
    '**kwargs)\\n           ^^^^^^^^^^^^^^^^^^^^^^^^^\\n  File \\"/tmp/celspec-run/app/tasks.py\\",'
    ' line 14, in boom\\n    raise ValueError(msg)\\nValueError: bad thing\\n", "children": [], '
    '"date_done": "2026-11-21T19:02:11.210660+00:00", "name": "tasks.boom", '
    '"args": ["bad thing"], "kwargs": {}, "worker": "w1@vm", "retries": 0, "queue": "celery", '
    '"task_id": "710f71ed-ad5f-47bb-9f19-3ae10ec77db9"}'
)

RETRY_META = (
    '{"status": "RETRY", "result": {"exc_type": "KeyError", "exc_message": ["again"], '
    '"exc_module": "builtins"}, '
    '"traceback": "Traceback (most recent call last):\\n  File \\"/tmp/celspec/lib/python3.11/sit'
    'e-packages/celery/app/trace.py\\", line 564, in trace_task\\n    R = retval = fun(*args, '
    '**kwargs)\\n                 ^^^^^^^^^^^^^^^^^^^^\\n  File \\"/tmp/celspec/lib/python3.11/sit'
    'e-packages/celery/app/trace.py\\", line 883, '
    "in __protected_call__\\n    return self.run(*args, "
    '**kwargs)\\n           ^^^^^^^^^^^^^^^^^^^^^^^^^\\n  File \\"/tmp/celspec-run/app/tasks.py\\",'
    " line 17, in retrier\\n    raise self.retry(exc=KeyError('again'), "
    'countdown=1)\\n          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\\n  File \\"/tmp/cels'
    'pec/lib/python3.11/site-packages/celery/app/task.py\\", line 963, '
    "in retry\\n    raise ret\\ncelery.exceptions.Retry: Retry in 1s: KeyError('again')\\n\", "
    '"children": [[["1e1ec5ef-c040-44a8-8b24-d828f5c69ce8", null], null]], "date_done": null, '
    '"name": "tasks.retrier", "args": [], "kwargs": {}, "worker": "w1@vm", "retries": 0, '
    '"queue": "celery", "task_id": "1e1ec5ef-c040-44a8-8b24-d828f5c69ce8"}'
)

REVOKED_TERMINATED_META = (
    '{"status": "REVOKED", "result": {"exc_type": "TaskRevokedError", '
    '"exc_message": ["terminated"], "exc_module": "celery.exceptions"}, "traceback": null, '
    '"children": [], "date_done": "2026-11-21T19:03:56.003507+00:00", "name": "tasks.slow", '
    '"args": [30], "kwargs": {}, "worker": "w1@vm", "retries": 0, "queue": "celery", '
    '"task_id": "7defc790-66a8-446c-82f4-733af7118691"}'
)

REVOKED_BY_CONTROL_META = (
    '{"status": "REVOKED", "result": {"exc_type": "TaskRevokedError", '
    '"exc_message": ["revoked"], "exc_module": "celery.exceptions"}, "traceback": null, '
    '"children": null, "date_done": "2026-11-21T19:05:43.545757+00:00", '
    '"task_id": "34e4d992-8666-4497-b04f-52a062074773"}'
)

REJECT_META = (
    '{"status": "FAILURE", "result": {"exc_type": "Reject", "exc_message": ["nope", false], '
    '"exc_module": "celery.exceptions"}, "traceback": null, "children": [], '
    '"date_done": "2026-11-21T19:05:40.033059+00:00", "name": "tasks.rejecter", "args": [], '
    '"kwargs": {}, "worker": "w2@vm", "retries": 0, "queue": "celery", '
    '"task_id": "278026da-b22d-450e-99e6-5b3a634f2f04"}'
)

STARTED_META = (
    '{"status": "STARTED", "result": {"pid": 14490, "hostname": "w2@vm"}, "traceback": null, '
    '"children": [], "date_done": null, "name": "tasks.tracked", "args": [1], "kwargs": {}, '
    '"worker": "w2@vm", "retries": 0, "queue": "celery", '
    '"task_id": "1fc21029-87da-4ab6-874e-2334c7dac331"}'
)

NOT_REGISTERED_META = (
    '{"status": "FAILURE", "result": {"exc_type": "NotRegistered", '
    '"exc_message": ["tasks.doesnotexist"], "exc_module": "celery.exceptions"}, '
    '"traceback": null, "children": [], "date_done": "2026-11-21T19:05:42.021856+00:00", '
    '"name": null, "args": null, "kwargs": null, "worker": null, "retries": null, '
    '"queue": null, "task_id": "497e1715-4b37-45d4-9040-91452eaa1f0c"}'
)


FAILURE_AFTER_RETRY_META = (
    '{"status": "FAILURE", "result": {"exc_type": "KeyError", "exc_message": ["again"], '
    '"exc_module": "builtins"}, '
    '"traceback": "Traceback (most recent call last):\\n  File \\"/tmp/celspec/lib/python3.11/sit'
    'e-packages/celery/app/trace.py\\", line 564, in trace_task\\n    R = retval = fun(*args, '
    '**kwargs)\\n                 ^^^^^^^^^^^^^^^^^^^^\\n  File \\"/tmp/celspec/lib/python3.11/sit'
    'e-packages/celery/app/trace.py\\", line 883, '
    "in __protected_call__\\n    return self.run(*args, "
    '**kwargs)\\n           ^^^^^^^^^^^^^^^^^^^^^^^^^\\n  File \\"/tmp/celspec-run/app/tasks.py\\",'
    " line 17, in retrier\\n    raise self.retry(exc=KeyError('again'), "
    'countdown=1)\\n          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\\n  File \\"/tmp/cels'
    'pec/lib/python3.11/site-packages/celery/app/task.py\\", line 942, '
    'in retry\\n    raise_with_context(exc)\\n  File \\"/tmp/celspec/lib/python3.11/site-packages/'
    'celery/utils/serialization.py\\", line 273, '
    "in raise_with_context\\n    raise exc from exc_info[1]\\nKeyError: 'again'\\n\", "
    '"children": [], "date_done": "2026-11-21T19:02:12.225432+00:00", '
    '"parent_id": "1e1ec5ef-c040-44a8-8b24-d828f5c69ce8", "name": "tasks.retrier", "args": [], '
    '"kwargs": {}, "worker": "w1@vm", "retries": 1, "queue": "celery", '
    '"task_id": "1e1ec5ef-c040-44a8-8b24-d828f5c69ce8"}'
)

GROUP_MEMBER_META = (
    '{"status": "SUCCESS", "result": 0, "traceback": null, "children": [], '
    '"date_done": "2026-11-21T19:02:12.249176+00:00", '
    '"group_id": "3fe7ed49-58c7-44bb-af1a-76403605ee2e", "name": "tasks.add", "args": [0, 0], '
    '"kwargs": {}, "worker": "w1@vm", "retries": 0, "queue": "celery", '
    '"task_id": "497b74bb-e6c8-4718-a6e9-ec49c5addc14"}'
)


class Outer:
    """Holds a nested exception class, to check dotted ``exc_type`` names."""

    class InnerError(Exception):
        pass


class NeedsTwoArguments(Exception):
    def __init__(self, first: str, second: str) -> None:
        super().__init__(first, second)


def dumped(meta: dict[str, Any]) -> str:
    return serialization.dumps(meta)[2].decode()


# ---- building meta ----


def test_success_meta_is_byte_identical_to_celerys() -> None:
    meta = build_meta(
        "4c0aa0f9-b647-48bf-8a93-da31b2f0b56a",
        states.SUCCESS,
        5,
        date_done=datetime.datetime(2026, 11, 21, 19, 1, 45, 865316, tzinfo=datetime.UTC),
        extended={
            "name": "tasks.add",
            "args": [2, 3],
            "kwargs": {},
            "worker": "w1@vm",
            "retries": 0,
            "queue": "celery",
        },
    )

    assert dumped(meta) == SUCCESS_META


def test_failure_meta_encodes_the_exception_as_celery_does() -> None:
    expected = json.loads(FAILURE_META)

    meta = build_meta(
        expected["task_id"],
        states.FAILURE,
        ValueError("bad thing"),
        traceback=expected["traceback"],
        date_done=expected["date_done"],
        extended={"name": "tasks.boom", "args": ["bad thing"], "kwargs": {}, "worker": "w1@vm"}
        | {"retries": 0, "queue": "celery"},
    )

    assert dumped(meta) == FAILURE_META


def test_failure_meta_puts_parent_id_before_extended_fields() -> None:
    expected = json.loads(FAILURE_AFTER_RETRY_META)
    extended = {key: expected[key] for key in ("name", "args", "kwargs", "worker", "retries")}

    meta = build_meta(
        expected["task_id"],
        states.FAILURE,
        KeyError("again"),
        traceback=expected["traceback"],
        date_done=expected["date_done"],
        parent_id=expected["parent_id"],
        extended=extended | {"queue": "celery"},
    )

    assert dumped(meta) == FAILURE_AFTER_RETRY_META


def test_group_member_meta_has_group_id_after_date_done() -> None:
    expected = json.loads(GROUP_MEMBER_META)
    extended = {key: expected[key] for key in ("name", "args", "kwargs", "worker", "retries")}

    meta = build_meta(
        expected["task_id"],
        states.SUCCESS,
        0,
        date_done=expected["date_done"],
        group_id=expected["group_id"],
        extended=extended | {"queue": "celery"},
    )

    assert dumped(meta) == GROUP_MEMBER_META


def test_retry_meta_has_no_date_done_and_lists_the_retry_as_a_child() -> None:
    expected = json.loads(RETRY_META)

    meta = build_meta(
        expected["task_id"],
        states.RETRY,
        KeyError("again"),
        traceback=expected["traceback"],
        children=[[["1e1ec5ef-c040-44a8-8b24-d828f5c69ce8", None], None]],
        extended={key: expected[key] for key in ("name", "args", "kwargs", "worker", "retries")}
        | {"queue": "celery"},
    )

    assert dumped(meta) == RETRY_META


def test_extended_fields_unknown_to_the_worker_are_written_as_null() -> None:
    expected = json.loads(NOT_REGISTERED_META)

    meta = build_meta(
        expected["task_id"],
        states.FAILURE,
        NotRegistered("tasks.doesnotexist"),
        date_done=expected["date_done"],
        extended={},
    )

    assert list(meta) == list(expected)
    assert meta["name"] is None
    assert meta["queue"] is None
    assert meta["result"]["exc_type"] == "NotRegistered"
    assert meta["result"]["exc_message"] == ["tasks.doesnotexist"]


def test_stamps_follow_the_extended_fields() -> None:
    meta = build_meta(
        "t-1",
        states.SUCCESS,
        3,
        extended={"name": "tasks.add", "stamped_headers": ["mystamp"], "mystamp": "blue"},
    )

    assert list(meta)[-4:] == ["queue", "stamped_headers", "mystamp", "task_id"]


def test_ready_states_get_date_done_now_in_utc() -> None:
    before = datetime.datetime.now(datetime.UTC)

    meta = build_meta("t-1", states.SUCCESS, 1)

    done = datetime.datetime.fromisoformat(meta["date_done"])
    assert meta["date_done"].endswith("+00:00")
    assert before <= done <= datetime.datetime.now(datetime.UTC)


@pytest.mark.parametrize("status", [states.STARTED, states.RETRY, states.PENDING])
def test_unready_states_have_null_date_done(status: str) -> None:
    assert build_meta("t-1", status, None)["date_done"] is None


def test_naive_date_done_is_taken_as_utc() -> None:
    meta = build_meta("t-1", states.SUCCESS, 1, date_done=datetime.datetime(2026, 1, 2, 3, 4, 5))

    assert meta["date_done"] == "2026-01-02T03:04:05+00:00"


def test_plain_meta_has_only_the_always_present_fields() -> None:
    meta = build_meta("t-1", states.SUCCESS, {"a": 1})

    assert list(meta) == ["status", "result", "traceback", "children", "date_done", "task_id"]
    assert meta["children"] == []


def test_pending_meta_is_what_a_missing_result_reads_as() -> None:
    meta = pending_meta("t-1")

    assert meta["status"] == states.PENDING
    assert meta["result"] is None
    assert meta["task_id"] == "t-1"
    assert result_from_meta(meta) is None


# ---- reading results Celery wrote ----


def test_celery_revoked_result_rebuilds_as_celeriac_task_revoked_error() -> None:
    result = result_from_meta(json.loads(REVOKED_TERMINATED_META))

    assert type(result) is TaskRevokedError
    assert result.args == ("terminated",)


def test_short_revoked_record_from_the_control_command_is_read() -> None:
    result = result_from_meta(json.loads(REVOKED_BY_CONTROL_META))

    assert isinstance(result, TaskRevokedError)
    assert str(result) == "revoked"


def test_celery_reject_failure_rebuilds_with_reason_and_requeue() -> None:
    result = result_from_meta(json.loads(REJECT_META))

    assert isinstance(result, Reject)
    assert result.reason == "nope"
    assert result.requeue is False


def test_celery_not_registered_failure_rebuilds_as_not_registered() -> None:
    result = result_from_meta(json.loads(NOT_REGISTERED_META))

    assert isinstance(result, NotRegistered)
    assert str(result) == "tasks.doesnotexist"


def test_builtin_exception_rebuilds_as_the_builtin_class() -> None:
    result = result_from_meta(json.loads(FAILURE_META))

    assert type(result) is ValueError
    assert result.args == ("bad thing",)


def test_started_result_is_the_worker_info_dict() -> None:
    assert result_from_meta(json.loads(STARTED_META)) == {"pid": 14490, "hostname": "w2@vm"}


def test_success_value_shaped_like_an_exception_stays_a_dict() -> None:
    value = {"exc_type": "ValueError", "exc_message": [], "exc_module": "builtins"}

    assert result_from_meta({"status": states.SUCCESS, "result": value}) == value


# ---- exception encoding ----


def test_celeriac_namesakes_are_stored_under_celerys_modules() -> None:
    assert encode_exception(TaskRevokedError("expired")) == {
        "exc_type": "TaskRevokedError",
        "exc_message": ["expired"],
        "exc_module": "celery.exceptions",
    }
    assert encode_exception(SoftTimeLimitExceeded())["exc_module"] == "billiard.exceptions"
    assert encode_exception(ContentDisallowed("yaml"))["exc_module"] == "kombu.exceptions"


def test_exceptions_celery_lacks_keep_celeriacs_module_and_round_trip() -> None:
    encoded = encode_exception(CeleriacError("ours"))

    assert encoded["exc_module"] == "celeriac.exceptions"
    assert type(decode_exception(encoded)) is CeleriacError


@pytest.mark.parametrize("exc", [TaskRevokedError("revoked"), SoftTimeLimitExceeded("soft")])
def test_namesakes_round_trip_to_celeriacs_class(exc: Exception) -> None:
    decoded = decode_exception(encode_exception(exc))

    assert type(decoded) is type(exc)
    assert decoded.args == exc.args


def test_reject_encodes_reason_and_requeue_like_celery() -> None:
    assert encode_exception(Reject("nope", requeue=False))["exc_message"] == ["nope", False]


def test_arguments_that_are_not_json_become_their_repr() -> None:
    marker = object()

    encoded = encode_exception(ValueError(marker, (1, 2), {"raw": b"x"}, {1: "int key"}))

    assert encoded["exc_message"] == [repr(marker), [1, 2], {"raw": "b'x'"}, "{1: 'int key'}"]
    assert json.loads(serialization.dumps(encoded)[2]) == encoded


def test_nested_exception_class_round_trips_by_qualified_name() -> None:
    encoded = encode_exception(Outer.InnerError("deep"))

    decoded = decode_exception(encoded)

    assert encoded["exc_type"] == "Outer.InnerError"
    assert type(decoded) is Outer.InnerError
    assert decoded.args == ("deep",)


def test_unknown_module_gives_a_cached_synthetic_class_without_importing() -> None:
    data = {"exc_type": "PaymentDeclined", "exc_module": "shop.errors", "exc_message": ["card"]}

    first = decode_exception(data)
    second = decode_exception(data)

    assert type(first) is type(second)
    assert isinstance(first, Exception)
    assert type(first).__name__ == "PaymentDeclined"
    assert type(first).__module__ == "shop.errors"
    assert first.args == ("card",)
    assert encode_exception(first) == data


def test_module_not_yet_imported_is_never_imported() -> None:
    assert "tabnanny" not in sys.modules

    decoded = decode_exception(
        {"exc_type": "NannyNag", "exc_module": "tabnanny", "exc_message": ["x"]}
    )

    assert "tabnanny" not in sys.modules
    assert type(decoded).__module__ == "tabnanny"


def test_missing_module_gives_a_synthetic_class() -> None:
    decoded = decode_exception({"exc_type": "Oops", "exc_module": None, "exc_message": []})

    assert type(decoded).__name__ == "Oops"


def test_class_that_rejects_the_stored_arguments_still_rebuilds_by_name() -> None:
    data = encode_exception(NeedsTwoArguments("a", "b"))
    data["exc_message"] = ["only one"]

    decoded = decode_exception(data)

    assert type(decoded).__name__ == "NeedsTwoArguments"
    assert decoded.args == ("only one",)


def test_single_message_value_is_passed_as_one_argument() -> None:
    decoded = decode_exception(
        {"exc_type": "ValueError", "exc_module": "builtins", "exc_message": "old style"}
    )

    assert decoded.args == ("old style",)


@pytest.mark.parametrize(
    ("module", "qualname"),
    [("os", "system"), ("builtins", "dict"), ("json", "loads"), ("sys", "modules")],
)
def test_non_exception_types_are_refused(module: str, qualname: str) -> None:
    data = {"exc_type": qualname, "exc_module": module, "exc_message": ["rm -rf /"]}

    with pytest.raises(SecurityError, match=qualname):
        decode_exception(data)


def test_dict_without_exc_type_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_exception({"exc_message": ["x"]})

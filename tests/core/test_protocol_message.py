"""Protocol 2 task messages, protocol 1 conversion and event dicts, against Celery 5.7 captures.

The fixtures are envelopes from celery-wire-captures.txt, copied verbatim. The capture prints
each body decoded on the line after its envelope; ``captured`` puts it back in base64. The file
runs past 600 lines because those captures take about 150 of them.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from celeriac import serialization
from celeriac.exceptions import ContentDisallowed, DecodeError, InvalidTaskError
from celeriac.protocol.envelope import Envelope
from celeriac.protocol.event import (
    EVENT_EXCHANGE,
    Event,
    group_from,
    routing_key_for,
)
from celeriac.protocol.message import TaskMessage, build_task_message, parse_task_message

UTC = datetime.UTC
EMPTY_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

# ---- captured Celery 5.7 traffic ----

# wire protocol §3.1: the first task sent, exactly as stored on Redis (body in base64).
FIRST_TASK_ENVELOPE = (
    '{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjog'
    'bnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", '
    '"content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", '
    '"id": "4c0aa0f9-b647-48bf-8a93-da31b2f0b56a", "shadow": null, "eta": null, '
    '"expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, '
    'null], "root_id": "4c0aa0f9-b647-48bf-8a93-da31b2f0b56a", "parent_id": null, '
    '"argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen5791@vm", "ignore_result": false, '
    '"replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, '
    '"properties": {"correlation_id": "4c0aa0f9-b647-48bf-8a93-da31b2f0b56a", '
    '"reply_to": "52660229-67c7-3f83-b15a-e1880368b739", "delivery_mode": 2, '
    '"delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, '
    '"body_encoding": "base64", "delivery_tag": "46416c27-426d-4fb9-9a15-9f65bd4d74c3"}}'
)

# The rest print the body on the line after the envelope.

RETRY_ENVELOPE = (
    '{"body": "<base64; decoded on next line>", "content-encoding": "utf-8", '
    '"content-type": "application/json", "headers": {"lang": "py", "task": "tasks.retrier", '
    '"id": "1e1ec5ef-c040-44a8-8b24-d828f5c69ce8", "shadow": null, '
    '"eta": "2026-11-21T19:02:12.220425+00:00", "expires": null, "group": null, '
    '"group_index": null, "retries": 1, "timelimit": [null, null], '
    '"root_id": "1e1ec5ef-c040-44a8-8b24-d828f5c69ce8", '
    '"parent_id": "1e1ec5ef-c040-44a8-8b24-d828f5c69ce8", "argsrepr": "()", '
    '"kwargsrepr": "{}", "origin": "gen8386@vm", "ignore_result": false, '
    '"replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, '
    '"properties": {"correlation_id": "1e1ec5ef-c040-44a8-8b24-d828f5c69ce8", '
    '"reply_to": "cb958743-739f-3df8-8318-3a96e106fd71", "origin": "gen8386@vm", '
    '"delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, '
    '"priority": 0, "body_encoding": "base64", '
    '"delivery_tag": "ca00ca37-0d58-4ad2-95fd-c65b5c11e31b"}}'
)

RETRY_BODY = '[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'

ETA_ENVELOPE = (
    '{"body": "<base64; decoded on next line>", "content-encoding": "utf-8", '
    '"content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", '
    '"id": "653a8635-cbc8-4c58-ae48-372466d4962a", "shadow": "my-shadow-name", '
    '"eta": "2026-11-21T19:02:14.795658+00:00", "expires": "2026-11-21T19:03:12.795658+00:00", '
    '"group": null, "group_index": null, "retries": 0, "timelimit": [null, null], '
    '"root_id": "653a8635-cbc8-4c58-ae48-372466d4962a", "parent_id": null, "argsrepr": "(5, '
    '5)", "kwargsrepr": "{}", "origin": "gen8386@vm", "ignore_result": false, '
    '"replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, '
    '"properties": {"correlation_id": "653a8635-cbc8-4c58-ae48-372466d4962a", '
    '"reply_to": "cb958743-739f-3df8-8318-3a96e106fd71", "delivery_mode": 2, '
    '"expiration": "60000", "delivery_info": {"exchange": "", "routing_key": "celery"}, '
    '"priority": 7, "body_encoding": "base64", '
    '"delivery_tag": "259ea5a9-4036-461a-bec0-3ad4ac7ba1c5"}}'
)

ETA_BODY = '[[5, 5], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'

CHORD_HEADER_ENVELOPE = (
    '{"body": "<base64; decoded on next line>", "content-encoding": "utf-8", '
    '"content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", '
    '"id": "7a112ff3-cd01-4c2b-bf23-21bffef093fb", "shadow": null, "eta": null, '
    '"expires": null, "group": "116acf51-4040-4902-b8ff-3b251d27ae70", "group_index": 0, '
    '"retries": 0, "timelimit": [null, null], '
    '"root_id": "7a112ff3-cd01-4c2b-bf23-21bffef093fb", "parent_id": null, "argsrepr": "(1, '
    '1)", "kwargsrepr": "{}", "origin": "gen8386@vm", "ignore_result": false, '
    '"replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, '
    '"properties": {"correlation_id": "7a112ff3-cd01-4c2b-bf23-21bffef093fb", '
    '"reply_to": "cb958743-739f-3df8-8318-3a96e106fd71", "delivery_mode": 2, '
    '"delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, '
    '"body_encoding": "base64", "delivery_tag": "f3a2b04f-4ce1-45eb-82f6-0397abfe9dd8"}}'
)

CHORD_HEADER_BODY = (
    '[[1, 1], {}, {"callbacks": null, "errbacks": null, "chain": null, '
    '"chord": {"task": "tasks.tsum", "args": [], "kwargs": {}, '
    '"options": {"task_id": "0cd10d66-bfcc-42ff-9e86-98a8b84b4a2b", '
    '"reply_to": "cb958743-739f-3df8-8318-3a96e106fd71", '
    '"group_id": "116acf51-4040-4902-b8ff-3b251d27ae70"}, "subtask_type": null, '
    '"immutable": false}}]'
)

COMPRESSED_ENVELOPE = (
    '{"body": "<base64 of non-JSON bytes (compressed or pickle); kept as is>", '
    '"content-encoding": "utf-8", "content-type": "application/json", '
    '"headers": {"lang": "py", "task": "tasks.add", '
    '"id": "15df1fad-696d-4a19-a3fd-5fb83fa5dab9", "shadow": null, "eta": null, '
    '"expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, '
    'null], "root_id": "15df1fad-696d-4a19-a3fd-5fb83fa5dab9", "parent_id": null, '
    '"argsrepr": "(1, 2)", "kwargsrepr": "{}", "origin": "gen19402@vm", '
    '"ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, '
    '"stamps": {}, "compression": "application/x-gzip"}, '
    '"properties": {"correlation_id": "15df1fad-696d-4a19-a3fd-5fb83fa5dab9", '
    '"reply_to": "770007b2-13a9-3a38-bc83-305cfd24962e", "delivery_mode": 2, '
    '"delivery_info": {"exchange": "", "routing_key": "cq"}, "priority": 0, '
    '"body_encoding": "base64", "delivery_tag": "3a0ca0ac-07d4-4f74-8e42-062edc67c9a0"}}'
)

COMPRESSED_BODY = "eJyLjjbUUTCK1VGorgVipeTEnJykxOTsYiUrhbzSnBwdBaXUoiI0keSMxMw8ZG5+UQqUWxsLAAnRGfA="

PICKLE_ENVELOPE = (
    '{"body": "<base64 of non-JSON bytes (compressed or pickle); kept as is>", '
    '"content-encoding": "binary", "content-type": "application/x-python-serialize", '
    '"headers": {"lang": "py", "task": "tasks.add", '
    '"id": "b3f20bc6-6e22-49a1-b677-391613400165", "shadow": null, "eta": null, '
    '"expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, '
    'null], "root_id": "b3f20bc6-6e22-49a1-b677-391613400165", "parent_id": null, '
    '"argsrepr": "(1, 2)", "kwargsrepr": "{}", "origin": "gen19402@vm", '
    '"ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, '
    '"stamps": {}}, "properties": {"correlation_id": "b3f20bc6-6e22-49a1-b677-391613400165", '
    '"reply_to": "770007b2-13a9-3a38-bc83-305cfd24962e", "delivery_mode": 2, '
    '"delivery_info": {"exchange": "", "routing_key": "cq"}, "priority": 0, '
    '"body_encoding": "base64", "delivery_tag": "1932438b-bb9a-4364-8406-b4cda3c818ae"}}'
)

PICKLE_BODY = (
    "gASVOgAAAAAAAABLAUsChpR9lH2UKIwJY2FsbGJhY2tzlE6MCGVycmJhY2tzlE6MBWNoYWlulE6MBWNob3JklE51h5Qu"
)

STAMPED_ENVELOPE = (
    '{"body": "<base64; decoded on next line>", "content-encoding": "utf-8", '
    '"content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", '
    '"id": "3862d517-46c4-44dd-985b-c782d531f794", "shadow": null, "eta": null, '
    '"expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, '
    'null], "root_id": "3862d517-46c4-44dd-985b-c782d531f794", "parent_id": null, '
    '"argsrepr": "(1, 2)", "kwargsrepr": "{}", "origin": "gen19249@vm", '
    '"ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": ["mystamp"], '
    '"stamps": {"mystamp": "blue"}}, '
    '"properties": {"correlation_id": "3862d517-46c4-44dd-985b-c782d531f794", '
    '"reply_to": "19234520-a5a8-322f-b201-19e7175442a7", "delivery_mode": 2, '
    '"delivery_info": {"exchange": "", "routing_key": "stampq"}, "priority": 0, '
    '"body_encoding": "base64", "delivery_tag": "650d6387-7c52-423f-ba3f-cbf27afafbea"}}'
)

STAMPED_BODY = '[[1, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'

TWO_ELEMENT_ENVELOPE = (
    '{"body": "<base64; decoded on next line>", "content-encoding": "utf-8", '
    '"content-type": "application/json", "headers": {"task": "tasks.add", '
    '"id": "dc32ab6c-31c9-4465-b027-fd25bdd58c16"}, '
    '"properties": {"delivery_tag": "8bd2dafb-7cfc-4f43-a3bb-41ad3e1392ac", '
    '"delivery_info": {"exchange": "", "routing_key": "celery"}, "body_encoding": "base64"}}'
)

TWO_ELEMENT_BODY = "[[1, 2], {}]"


# Events a Celery 5.7 worker and client published.

WORKER_ONLINE_EVENT = (
    '{"hostname": "w1@vm", "utcoffset": 0.0, "pid": 6882, "clock": 1, "freq": 2.0, '
    '"active": 0, "processed": 0, "loadavg": [0.51, 0.19, 0.07], "sw_ident": "py-celery", '
    '"sw_ver": "5.7.0", "sw_sys": "Linux", "timestamp": 1795287705.8548627, '
    '"type": "worker-online"}'
)

TASK_SENT_EVENT = (
    '{"hostname": "gen6924@vm", "utcoffset": 0.0, "pid": 6924, "clock": 1, '
    '"uuid": "1e1ec5ef-c040-44a8-8b24-d828f5c69ce8", '
    '"root_id": "1e1ec5ef-c040-44a8-8b24-d828f5c69ce8", '
    '"parent_id": "1e1ec5ef-c040-44a8-8b24-d828f5c69ce8", "name": "tasks.retrier", '
    '"args": "()", "kwargs": "{}", "retries": 1, "eta": "2026-11-21T19:02:12.220425+00:00", '
    '"expires": null, "queue": "celery", "exchange": "", "routing_key": "celery", '
    '"timestamp": 1795287731.229384, "type": "task-sent"}'
)


def captured(envelope_json: str, body: str, *, body_is_base64: bool = False) -> Envelope:
    """Rebuild a captured envelope from its printed envelope and body lines."""
    raw = json.loads(envelope_json)
    raw["body"] = body if body_is_base64 else base64.b64encode(body.encode()).decode()
    return Envelope.from_json(json.dumps(raw))


def plain_envelope(body: bytes, **headers: Any) -> Envelope:
    return Envelope(body=body, headers={"task": "tasks.add", "id": "t-1", **headers})


# ---- parsing captured messages ----


def test_captured_task_message_parses_headers_without_decoding_the_body() -> None:
    envelope = Envelope.from_json(FIRST_TASK_ENVELOPE)

    message = parse_task_message(envelope, accept=["json"])

    assert message.name == "tasks.add"
    assert message.id == "4c0aa0f9-b647-48bf-8a93-da31b2f0b56a"
    assert message.root_id == message.id
    assert message.parent_id is None
    assert message.timelimit == (None, None)
    assert message.retries == 0
    assert message.argsrepr == "(2, 3)"
    assert message.kwargsrepr == "{}"
    assert message.origin == "gen5791@vm"
    assert message.ignore_result is False
    assert message.stamps == {}
    assert message.compression is None
    assert message.protocol == 2
    assert message.display_name == "tasks.add"
    assert message.properties["reply_to"] == "52660229-67c7-3f83-b15a-e1880368b739"
    assert message.decode_body(["json"]) == ([2, 3], {}, EMPTY_EMBED)


def test_captured_retry_message_has_aware_eta_and_itself_as_parent() -> None:
    message = parse_task_message(captured(RETRY_ENVELOPE, RETRY_BODY))

    assert message.eta == datetime.datetime(2026, 11, 21, 19, 2, 12, 220425, tzinfo=UTC)
    assert message.retries == 1
    assert message.parent_id == message.id
    assert message.expires is None


def test_captured_eta_message_has_shadow_expires_and_priority() -> None:
    message = parse_task_message(captured(ETA_ENVELOPE, ETA_BODY))

    assert message.display_name == "my-shadow-name"
    assert message.name == "tasks.add"
    assert message.expires == datetime.datetime(2026, 11, 21, 19, 3, 12, 795658, tzinfo=UTC)
    assert message.properties["priority"] == 7
    assert message.properties["expiration"] == "60000"
    assert message.decode_body() == ([5, 5], {}, EMPTY_EMBED)


def test_captured_chord_header_keeps_group_and_chord_body_signature() -> None:
    message = parse_task_message(captured(CHORD_HEADER_ENVELOPE, CHORD_HEADER_BODY))

    _, _, embed = message.decode_body(["json"])

    assert message.group == "116acf51-4040-4902-b8ff-3b251d27ae70"
    assert message.group_index == 0
    assert embed["chord"]["task"] == "tasks.tsum"
    assert embed["chord"]["options"]["group_id"] == message.group


def test_captured_compressed_message_is_decompressed_on_decode() -> None:
    envelope = captured(COMPRESSED_ENVELOPE, COMPRESSED_BODY, body_is_base64=True)

    message = parse_task_message(envelope)

    assert message.compression == "application/x-gzip"
    assert message.decode_body(["json"]) == ([1, 2], {}, EMPTY_EMBED)


def test_captured_pickle_message_is_refused_unless_pickle_is_accepted() -> None:
    message = parse_task_message(captured(PICKLE_ENVELOPE, PICKLE_BODY, body_is_base64=True))

    with pytest.raises(ContentDisallowed, match="application/x-python-serialize"):
        message.decode_body(["json"])
    assert message.decode_body(["pickle"]) == ([1, 2], {}, EMPTY_EMBED)


def test_captured_stamped_message_has_stamps() -> None:
    message = parse_task_message(captured(STAMPED_ENVELOPE, STAMPED_BODY))

    assert message.stamped_headers == ["mystamp"]
    assert message.stamps == {"mystamp": "blue"}


def test_captured_two_element_body_is_an_invalid_task_not_a_crash() -> None:
    message = parse_task_message(captured(TWO_ELEMENT_ENVELOPE, TWO_ELEMENT_BODY))

    with pytest.raises(InvalidTaskError, match="2 elements"):
        message.decode_body(["json"])


def test_headers_with_only_task_and_id_are_accepted_with_defaults() -> None:
    message = parse_task_message(plain_envelope(b"[[1], {}, {}]"))

    assert message.retries == 0
    assert message.timelimit == (None, None)
    assert message.root_id is None
    assert message.ignore_result is None
    assert message.replaced_task_nesting == 0
    assert message.decode_body() == ([1], {}, EMPTY_EMBED)


# ---- building messages ----


def test_built_message_equals_the_captured_celery_message() -> None:
    expected = Envelope.from_json(FIRST_TASK_ENVELOPE)

    envelope = build_task_message(
        "tasks.add",
        "4c0aa0f9-b647-48bf-8a93-da31b2f0b56a",
        (2, 3),
        {},
        origin="gen5791@vm",
        reply_to="52660229-67c7-3f83-b15a-e1880368b739",
    )

    assert list(envelope.headers.items()) == list(expected.headers.items())
    del expected.properties["delivery_tag"]
    assert envelope.properties == expected.properties
    assert envelope.body == expected.body
    assert (envelope.content_type, envelope.content_encoding) == ("application/json", "utf-8")


def test_built_eta_message_equals_the_captured_one() -> None:
    expected = captured(ETA_ENVELOPE, ETA_BODY)
    expires = datetime.datetime(2026, 11, 21, 19, 3, 12, 795658, tzinfo=UTC)

    envelope = build_task_message(
        "tasks.add",
        "653a8635-cbc8-4c58-ae48-372466d4962a",
        (5, 5),
        {},
        eta=datetime.datetime(2026, 11, 21, 19, 2, 14, 795658, tzinfo=UTC),
        expires=expires,
        shadow="my-shadow-name",
        priority=7,
        origin="gen8386@vm",
        reply_to="cb958743-739f-3df8-8318-3a96e106fd71",
        now=lambda: expires.timestamp() - 60,
    )

    assert list(envelope.headers.items()) == list(expected.headers.items())
    del expected.properties["delivery_tag"]
    assert list(envelope.properties.items()) == list(expected.properties.items())
    assert envelope.body == expected.body


def test_built_compressed_message_equals_the_captured_one() -> None:
    expected = captured(COMPRESSED_ENVELOPE, COMPRESSED_BODY, body_is_base64=True)

    envelope = build_task_message(
        "tasks.add",
        "15df1fad-696d-4a19-a3fd-5fb83fa5dab9",
        (1, 2),
        {},
        compression="gzip",
        origin="gen19402@vm",
        routing_key="cq",
        reply_to="770007b2-13a9-3a38-bc83-305cfd24962e",
    )

    assert list(envelope.headers.items()) == list(expected.headers.items())
    assert serialization.decompress(envelope.body, "gzip") == serialization.decompress(
        expected.body, "gzip"
    )


def test_built_message_has_exactly_celery_57_header_keys_in_order() -> None:
    captured_keys = list(Envelope.from_json(FIRST_TASK_ENVELOPE).headers)

    envelope = build_task_message("tasks.mul", "id-1", [], {"x": 1})

    assert list(envelope.headers) == captured_keys
    assert "compression" not in envelope.headers


def test_default_origin_names_this_process() -> None:
    envelope = build_task_message("tasks.add", "id-1", (), {})

    assert envelope.headers["origin"].startswith(f"gen{os.getpid()}@")


def test_custom_headers_are_merged_at_top_level() -> None:
    envelope = build_task_message("tasks.add", "id-1", (), {}, headers={"custom_hdr": "v"})

    assert envelope.headers["custom_hdr"] == "v"
    assert parse_task_message(envelope).headers["custom_hdr"] == "v"


def test_timelimit_is_hard_then_soft() -> None:
    envelope = build_task_message("t", "id-1", (), {}, time_limit=30, soft_time_limit=10)

    assert envelope.headers["timelimit"] == [30, 10]
    assert parse_task_message(envelope).timelimit == (30, 10)


def test_naive_eta_is_sent_as_utc_and_read_back_aware() -> None:
    envelope = build_task_message("t", "id-1", (), {}, eta=datetime.datetime(2026, 1, 2, 3, 4, 5))

    assert envelope.headers["eta"] == "2026-01-02T03:04:05+00:00"
    assert parse_task_message(envelope).eta == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_naive_eta_header_from_a_sender_is_taken_as_utc() -> None:
    message = parse_task_message(plain_envelope(b"[[], {}, {}]", eta="2026-01-02T03:04:05"))

    assert message.eta == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_expiration_property_is_floored_at_zero() -> None:
    expires = datetime.datetime(2020, 1, 1, tzinfo=UTC)

    envelope = build_task_message("t", "id-1", (), {}, expires=expires)

    assert envelope.properties["expiration"] == "0"


def test_expiration_property_is_absent_without_expires() -> None:
    assert "expiration" not in build_task_message("t", "id-1", (), {}).properties


def test_args_and_kwargs_repr_are_python_style_and_cut_to_1024_chars() -> None:
    envelope = build_task_message("t", "id-1", ["x" * 5000], {"y": 2})

    assert len(envelope.headers["argsrepr"]) == 1024
    assert envelope.headers["argsrepr"].startswith("('xxx")
    assert envelope.headers["kwargsrepr"] == "{'y': 2}"


def test_callbacks_and_chain_signatures_pass_through_the_body() -> None:
    link = {"task": "tasks.tsum", "args": [], "kwargs": {}, "options": {}, "immutable": False}

    envelope = build_task_message("t", "id-1", (1,), {}, callbacks=[link], chain=[])

    assert parse_task_message(envelope).decode_body() == (
        [1],
        {},
        {"callbacks": [link], "errbacks": None, "chain": [], "chord": None},
    )


@pytest.mark.parametrize("serializer", ["json", "pickle", "yaml", "msgpack"])
@pytest.mark.parametrize("compression", [None, "gzip", "bzip2", "lzma"])
def test_message_round_trips_through_the_stored_envelope(
    serializer: str, compression: str | None
) -> None:
    envelope = build_task_message(
        "tasks.add",
        "id-1",
        (2, "x"),
        {"flag": True},
        serializer=serializer,
        compression=compression,
    )

    stored = Envelope.from_json(envelope.to_json())
    message = parse_task_message(stored, accept=[serializer])

    assert message.decode_body([serializer]) == ([2, "x"], {"flag": True}, EMPTY_EMBED)


def test_json_message_carries_kombu_type_tags_in_args() -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    envelope = build_task_message("t", "id-1", (when, b"raw"), {})

    assert parse_task_message(envelope).decode_body(["json"])[0] == [when, b"raw"]


# ---- malformed messages ----


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[[1, 2], {}]", "2 elements"),
        (b"[[1], [2], {}]", "kwargs is not a mapping"),
        (b'[{"a": 1}, {}, {}]', "args is not a list"),
        (b'[[], {}, "embed"]', "embed is not a mapping"),
        (b'{"args": [1]}', "body is not a list"),
    ],
)
def test_malformed_body_raises_invalid_task_with_a_reason(body: bytes, reason: str) -> None:
    message = parse_task_message(plain_envelope(body))

    with pytest.raises(InvalidTaskError, match=reason):
        message.decode_body(["json"])


def test_body_that_is_not_json_raises_decode_error() -> None:
    message = parse_task_message(plain_envelope(b"this is not json"))

    with pytest.raises(DecodeError):
        message.decode_body(["json"])


def test_missing_id_header_is_an_invalid_task() -> None:
    envelope = Envelope(body=b"[[], {}, {}]", headers={"task": "tasks.add"})

    with pytest.raises(InvalidTaskError, match="'id'"):
        parse_task_message(envelope)


def test_no_task_header_and_a_v2_body_is_an_invalid_task() -> None:
    envelope = Envelope(body=b"[[], {}, {}]", headers={"id": "t-1"})

    with pytest.raises(InvalidTaskError, match="'task' header"):
        parse_task_message(envelope)


@pytest.mark.parametrize(
    "headers",
    [
        {"eta": "next tuesday"},
        {"eta": 12345},
        {"retries": "three"},
        {"timelimit": [10]},
        {"timelimit": ["10", None]},
        {"group_index": "0"},
        {"ignore_result": "yes"},
        {"stamped_headers": "mystamp"},
        {"stamps": ["blue"]},
        {"shadow": 7},
    ],
)
def test_header_of_the_wrong_type_is_an_invalid_task(headers: dict[str, Any]) -> None:
    with pytest.raises(InvalidTaskError, match="header"):
        parse_task_message(plain_envelope(b"[[], {}, {}]", **headers))


# ---- protocol 1 ----

V1_BODY: dict[str, Any] = {
    "task": "tasks.add",
    "id": "9d3c7a34-1b6b-4a8c-9c8e-2b1f3a0d5e61",
    "args": [2, 3],
    "kwargs": {},
    "group": None,
    "group_index": None,
    "retries": 0,
    "eta": None,
    "expires": None,
    "utc": True,
    "callbacks": None,
    "errbacks": None,
    "timelimit": [None, None],
    "taskset": None,
    "chord": None,
}


def v1_envelope(serializer: str = "json", **body: Any) -> Envelope:
    content_type, content_encoding, data = serialization.dumps({**V1_BODY, **body}, serializer)
    return Envelope(body=data, content_type=content_type, content_encoding=content_encoding)


def test_protocol_1_message_is_converted_to_protocol_2_fields() -> None:
    message = parse_task_message(v1_envelope(retries=2, timelimit=[30, 10]), accept=["json"])

    assert message.protocol == 1
    assert message.name == "tasks.add"
    assert message.id == V1_BODY["id"]
    assert message.retries == 2
    assert message.timelimit == (30, 10)
    assert message.headers["task"] == "tasks.add"
    assert message.decode_body(["json"]) == ([2, 3], {}, EMPTY_EMBED)


def test_protocol_1_callbacks_become_embed_with_no_chain() -> None:
    link = {"task": "tasks.tsum", "args": [], "kwargs": {}, "options": {}}

    message = parse_task_message(v1_envelope(callbacks=[link], taskset="g-1"))

    assert message.group == "g-1"
    assert message.decode_body()[2] == {
        "callbacks": [link],
        "errbacks": None,
        "chain": None,
        "chord": None,
    }


def test_protocol_1_naive_eta_is_utc_when_the_body_says_utc() -> None:
    message = parse_task_message(v1_envelope(eta="2026-01-02T03:04:05"))

    assert message.eta == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_protocol_1_naive_eta_is_local_time_when_the_body_says_not_utc() -> None:
    naive = datetime.datetime(2026, 1, 2, 3, 4, 5)

    message = parse_task_message(v1_envelope(eta=naive.isoformat(), utc=False))

    assert message.eta == naive.astimezone(UTC)


def test_protocol_1_body_is_refused_when_its_content_type_is_not_accepted() -> None:
    with pytest.raises(ContentDisallowed):
        parse_task_message(v1_envelope("pickle"), accept=["json"])


def test_protocol_1_kwargs_must_be_a_mapping() -> None:
    with pytest.raises(InvalidTaskError, match="kwargs is not a mapping"):
        parse_task_message(v1_envelope(kwargs=[1, 2]))


def test_protocol_1_body_needs_an_id() -> None:
    with pytest.raises(InvalidTaskError, match="task id"):
        parse_task_message(v1_envelope(id=None))


def test_task_message_is_frozen() -> None:
    message = parse_task_message(plain_envelope(b"[[], {}, {}]"))

    assert isinstance(message, TaskMessage)
    with pytest.raises(AttributeError):
        message.name = "other"  # type: ignore[misc]


# ---- events (wire protocol §5) ----


def test_event_puts_timestamp_and_type_last_like_celery() -> None:
    expected = json.loads(WORKER_ONLINE_EVENT)
    fields = {key: value for key, value in expected.items() if key != "type"}

    event = Event("worker-online", **fields)

    assert json.dumps(event) == WORKER_ONLINE_EVENT


def test_event_merges_fields_and_stamps_the_time() -> None:
    event = Event("task-sent", {"uuid": "t-1", "type": "ignored"}, name="tasks.add")

    assert list(event) == ["uuid", "name", "timestamp", "type"]
    assert event["type"] == "task-sent"
    assert isinstance(event["timestamp"], float)


def test_captured_task_sent_event_rebuilds_in_the_same_order() -> None:
    expected = json.loads(TASK_SENT_EVENT)
    fields = {key: value for key, value in expected.items() if key != "type"}

    assert json.dumps(Event("task-sent", fields)) == TASK_SENT_EVENT


@pytest.mark.parametrize(
    ("event_type", "group", "routing_key"),
    [
        ("task-sent", "task", "task.sent"),
        ("worker-heartbeat", "worker", "worker.heartbeat"),
        ("task-succeeded", "task", "task.succeeded"),
    ],
)
def test_event_group_and_routing_key_come_from_the_type(
    event_type: str, group: str, routing_key: str
) -> None:
    assert group_from(event_type) == group
    assert routing_key_for(event_type) == routing_key
    assert EVENT_EXCHANGE == "celeryev"


@pytest.mark.parametrize(("zone", "expected"), [("UTC0", "0.0"), ("XXX-2", "-2.0")])
def test_utcoffset_is_float_hours_west_of_utc(zone: str, expected: str) -> None:
    code = "from celeriac.protocol.event import utcoffset; print(repr(utcoffset()))"

    completed = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TZ": zone},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert completed.stdout.strip() == expected

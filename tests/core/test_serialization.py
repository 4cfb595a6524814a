"""Codecs, kombu's JSON type tags, compression and accept_content (wire protocol §2.5)."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import uuid
from typing import Any

import pytest

from celeriac import serialization
from celeriac.exceptions import (
    ContentDisallowed,
    DecodeError,
    EncodeError,
    ImproperlyConfigured,
    SerializationError,
)

# Captured from a Celery 5.7 client (celery-wire-captures.txt): a task body compressed with
# compression="gzip" and a task body sent with serializer="pickle".
CAPTURED_GZIP_BODY = (
    "eJyLjjbUUTCK1VGorgVipeTEnJykxOTsYiUrhbzSnBwdBaXUoiI0keSMxMw8ZG5+UQqUWxsLAAnRGfA="
)
CAPTURED_PICKLE_BODY = (
    "gASVOgAAAAAAAABLAUsChpR9lH2UKIwJY2FsbGJhY2tzlE6MCGVycmJhY2tzlE6MBWNoYWlulE6MBWNob3JklE51h5Qu"
)
EMPTY_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

SAMPLE = [1, 2.5, "text", None, True, {"nested": ["a", {"b": None}]}]


@pytest.mark.parametrize(
    ("serializer", "content_type", "content_encoding"),
    [
        ("json", "application/json", "utf-8"),
        ("pickle", "application/x-python-serialize", "binary"),
        ("yaml", "application/x-yaml", "utf-8"),
        ("msgpack", "application/x-msgpack", "binary"),
    ],
)
def test_every_serializer_round_trips_with_kombu_content_types(
    serializer: str, content_type: str, content_encoding: str
) -> None:
    dumped = serialization.dumps(SAMPLE, serializer)

    loaded = serialization.loads(dumped[2], dumped[0], dumped[1], accept=[serializer])

    assert dumped[:2] == (content_type, content_encoding)
    assert isinstance(dumped[2], bytes)
    assert loaded == SAMPLE


def test_serializer_may_be_named_by_content_type() -> None:
    assert serialization.dumps([1], "application/x-msgpack")[0] == "application/x-msgpack"


def test_json_matches_kombu_spacing_byte_for_byte() -> None:
    body = [[2, 3], {}, EMPTY_EMBED]

    _, _, data = serialization.dumps(body)

    assert data == (
        b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
    )


@pytest.mark.parametrize(
    ("value", "tagged"),
    [
        (
            datetime.datetime(2026, 11, 21, 19, 2, 14, 795658, tzinfo=datetime.UTC),
            {"__type__": "datetime", "__value__": "2026-11-21T19:02:14.795658+00:00"},
        ),
        (
            datetime.datetime(
                2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
            ),
            {"__type__": "datetime", "__value__": "2026-01-02T03:04:05+02:00"},
        ),
        (datetime.date(2026, 1, 2), {"__type__": "date", "__value__": "2026-01-02"}),
        (datetime.time(3, 4, 5), {"__type__": "time", "__value__": "03:04:05"}),
        (decimal.Decimal("3.14"), {"__type__": "decimal", "__value__": "3.14"}),
        (
            uuid.UUID("4c0aa0f9-b647-48bf-8a93-da31b2f0b56a"),
            {"__type__": "uuid", "__value__": "4c0aa0f9-b647-48bf-8a93-da31b2f0b56a"},
        ),
        (b"caf\xc3\xa9", {"__type__": "bytes", "__value__": "café"}),
        (b"\xff\x00", {"__type__": "base64", "__value__": "/wA="}),
    ],
)
def test_json_wraps_non_json_types_in_kombu_tags_and_restores_them(
    value: Any, tagged: dict[str, str]
) -> None:
    _, _, data = serialization.dumps({"value": value})

    assert json.loads(data) == {"value": tagged}
    assert serialization.loads(data, "application/json", "utf-8") == {"value": value}


def test_json_restores_tags_written_by_kombu() -> None:
    data = (
        b'[{"__type__": "datetime", "__value__": "2026-11-21T19:02:14.795658+00:00"}, '
        b'{"__type__": "decimal", "__value__": "1.10"}]'
    )

    when, amount = serialization.loads(data, "application/json", "utf-8")

    assert when == datetime.datetime(2026, 11, 21, 19, 2, 14, 795658, tzinfo=datetime.UTC)
    assert amount == decimal.Decimal("1.10")


def test_json_keeps_dicts_that_only_look_like_tags() -> None:
    value = {"__type__": "datetime", "__value__": "x", "other": 1}

    _, _, data = serialization.dumps(value)

    assert serialization.loads(data, "application/json", "utf-8") == value


def test_json_unknown_type_tag_fails_to_decode() -> None:
    data = b'{"__type__": "frobnicator", "__value__": "1"}'

    with pytest.raises(DecodeError, match="frobnicator"):
        serialization.loads(data, "application/json", "utf-8")


def test_json_refuses_unserializable_objects_naming_the_type() -> None:
    class Opaque:
        pass

    with pytest.raises(EncodeError, match="Opaque") as caught:
        serialization.dumps({"value": Opaque()})

    assert isinstance(caught.value, SerializationError)
    assert isinstance(caught.value.__cause__, TypeError)


def test_invalid_json_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="application/json"):
        serialization.loads(b"[1, 2", "application/json", "utf-8")


def test_invalid_pickle_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        serialization.loads(b"\x80\x04garbage", "application/x-python-serialize", "binary")


@pytest.mark.parametrize(
    "accept", [["json"], ["application/json"], {"application/json", "msgpack"}]
)
def test_accept_refuses_other_content_types(accept: Any) -> None:
    _, _, data = serialization.dumps([1], "pickle")

    with pytest.raises(ContentDisallowed, match=r"application/x-python-serialize"):
        serialization.loads(data, "application/x-python-serialize", "binary", accept=accept)


@pytest.mark.parametrize("accept", [["pickle"], ["application/x-python-serialize"]])
def test_accept_allows_names_or_content_types(accept: list[str]) -> None:
    _, _, data = serialization.dumps([1], "pickle")

    assert serialization.loads(data, "application/x-python-serialize", "binary", accept=accept) == [
        1
    ]


def test_content_disallowed_is_a_decode_error() -> None:
    assert issubclass(ContentDisallowed, DecodeError)


def test_unknown_content_type_is_refused_by_accept_and_undecodable_without() -> None:
    with pytest.raises(ContentDisallowed, match="application/x-unknown"):
        serialization.loads(b"x", "application/x-unknown", "utf-8", accept=["json"])
    with pytest.raises(DecodeError, match="application/x-unknown"):
        serialization.loads(b"x", "application/x-unknown", "utf-8")


def test_empty_content_type_and_data_mean_none() -> None:
    assert serialization.loads(b"", "", "") is None


def test_unknown_serializer_is_improperly_configured() -> None:
    with pytest.raises(ImproperlyConfigured, match="nosuch"):
        serialization.dumps([1], "nosuch")


def test_normalize_accept_maps_names_to_content_types() -> None:
    accepted = serialization.normalize_accept(["json", "application/x-python-serialize", "yaml"])

    assert accepted == frozenset(
        {"application/json", "application/x-python-serialize", "application/x-yaml"}
    )


def test_normalize_accept_rejects_unknown_names() -> None:
    with pytest.raises(ImproperlyConfigured, match="nosuch"):
        serialization.normalize_accept(["json", "nosuch"])


def test_registered_codec_is_used_by_name_and_content_type() -> None:
    serialization.register(
        "reversed-text",
        lambda value: str(value)[::-1],
        lambda text: text[::-1],
        content_type="application/x-reversed-text",
        content_encoding="utf-8",
    )

    content_type, encoding, data = serialization.dumps("hello", "reversed-text")

    assert (content_type, encoding, data) == ("application/x-reversed-text", "utf-8", b"olleh")
    assert serialization.loads(data, content_type, encoding, accept=["reversed-text"]) == "hello"
    assert serialization.normalize_accept(["reversed-text"]) == {"application/x-reversed-text"}


@pytest.mark.parametrize(
    ("method", "mime"),
    [
        ("zlib", "application/x-gzip"),
        ("gzip", "application/x-gzip"),
        ("application/x-gzip", "application/x-gzip"),
        ("bzip2", "application/x-bz2"),
        ("bz2", "application/x-bz2"),
        ("lzma", "application/x-lzma"),
        ("xz", "application/x-lzma"),
    ],
)
def test_every_compression_round_trips_by_method_and_by_mime(method: str, mime: str) -> None:
    data = b"payload " * 100

    compressed, header = serialization.compress(data, method)

    assert header == mime
    assert len(compressed) < len(data)
    assert serialization.decompress(compressed, method) == data
    assert serialization.decompress(compressed, header) == data


@pytest.mark.parametrize("method", ["zlib", "bz2", "lzma"])
def test_bounded_decompression_stops_at_the_limit_and_reads_like_the_one_shot(
    method: str,
) -> None:
    bomb, _ = serialization.compress(b"\0" * 10_000_000, method)
    stream, _ = serialization.compress(b"payload " * 100, method)
    concatenated, trailing = stream + stream, stream + b"not a stream"

    with pytest.raises(DecodeError, match="expands past the limit of 1000 bytes"):
        serialization.decompress(bomb, method, max_size=1000)
    with pytest.raises(DecodeError, match="truncated"):
        serialization.decompress(stream[:-4], method, max_size=1000)
    for data in (stream, concatenated, trailing):
        bounded = serialization.decompress(data, method, max_size=2000)
        assert bounded == serialization.decompress(data, method)


def test_gzip_compression_reads_a_celery_compressed_body() -> None:
    compressed = base64.b64decode(CAPTURED_GZIP_BODY)

    data = serialization.decompress(compressed, "application/x-gzip")

    assert serialization.loads(data, "application/json", "utf-8") == [[1, 2], {}, EMPTY_EMBED]


def test_gzip_compression_writes_zlib_format_as_kombu_does() -> None:
    body = b'[[1, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'

    compressed, _ = serialization.compress(body, "gzip")

    assert compressed == base64.b64decode(CAPTURED_GZIP_BODY)


def test_pickle_reads_a_celery_pickled_body() -> None:
    data = base64.b64decode(CAPTURED_PICKLE_BODY)

    body = serialization.loads(data, "application/x-python-serialize", "binary", accept=["pickle"])

    assert body == ((1, 2), {}, EMPTY_EMBED)


def test_unknown_compression_is_improperly_configured_or_undecodable() -> None:
    with pytest.raises(ImproperlyConfigured, match="snappy"):
        serialization.compress(b"x", "snappy")
    with pytest.raises(DecodeError, match="snappy"):
        serialization.decompress(b"x", "application/x-snappy")


def test_corrupt_compressed_data_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="application/x-bz2"):
        serialization.decompress(b"not bz2 at all", "application/x-bz2")

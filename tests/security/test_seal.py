"""The seal over a task message's headers and signing time, checked with the signature."""

from __future__ import annotations

import datetime
import secrets
from typing import Any

import pytest

from celeriac.security.seal import SEAL_KEY, open_seal, seal_body
from celeriac.security.serializer import SignedSerializer
from celeriac.security.shared_secret import SharedSecretSigner
from celeriac.security.signer import SignatureError

SIGNED_AT = 1_800_000_000.0
EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
BODY = [[20, 22], {}, EMBED]


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def task_headers(**extra: Any) -> dict[str, Any]:
    return {"lang": "py", "task": "proj.add", "id": "t1", "eta": None, "retries": 0, **extra}


def serializer(
    clock: Clock, max_age: float | None = 300, requires_seal: bool = True
) -> SignedSerializer:
    signer = SharedSecretSigner(secrets.token_bytes(32))
    return SignedSerializer(signer, max_age=max_age, requires_seal=requires_seal, now=clock)


def test_a_sealed_body_decodes_without_its_seal() -> None:
    clock = Clock(SIGNED_AT)
    codec = serializer(clock)
    headers = task_headers()

    payload = codec.encode_message(BODY, headers)

    assert codec.decode_message(payload, headers) == BODY


def test_the_seal_lists_the_headers_and_the_signing_time() -> None:
    sealed = seal_body(BODY, task_headers(), SIGNED_AT)

    body, seal = open_seal(sealed)

    assert body == BODY
    assert seal is not None
    assert seal.signed_at == SIGNED_AT
    assert seal.headers == ("eta", "id", "lang", "retries", "task")


@pytest.mark.parametrize(
    "change",
    [
        {"task": "proj.delete_everything"},
        {"id": "another-id"},
        {"retries": 1},
        {"eta": "2030-01-01T00:00:00+00:00"},
    ],
)
def test_a_changed_header_is_refused(change: dict[str, Any]) -> None:
    codec = serializer(Clock(SIGNED_AT))
    payload = codec.encode_message(BODY, task_headers())

    with pytest.raises(SignatureError, match="headers were changed after signing"):
        codec.decode_message(payload, task_headers(**change))


def test_a_removed_header_is_refused_even_when_it_was_null() -> None:
    codec = serializer(Clock(SIGNED_AT))
    payload = codec.encode_message(BODY, task_headers())
    headers = task_headers()
    del headers["eta"]

    with pytest.raises(SignatureError, match="headers were changed"):
        codec.decode_message(payload, headers)


def test_headers_added_after_signing_are_not_covered() -> None:
    codec = serializer(Clock(SIGNED_AT))
    payload = codec.encode_message(BODY, task_headers())
    in_transit = task_headers(compression="application/x-gzip", **{"x-original-queue": "q"})

    assert codec.decode_message(payload, in_transit) == BODY


def test_a_message_older_than_max_age_is_refused_as_a_replay() -> None:
    clock = Clock(SIGNED_AT)
    codec = serializer(clock, max_age=300)
    payload = codec.encode_message(BODY, task_headers())

    clock.now = SIGNED_AT + 300
    assert codec.decode_message(payload, task_headers()) == BODY
    clock.now = SIGNED_AT + 301
    with pytest.raises(SignatureError, match=r"301 s old .* security_max_age=300 s: a replay"):
        codec.decode_message(payload, task_headers())


def test_age_counts_from_the_eta_when_it_is_later() -> None:
    clock = Clock(SIGNED_AT)
    codec = serializer(clock, max_age=300)
    eta = datetime.datetime.fromtimestamp(SIGNED_AT + 86400, datetime.UTC).isoformat()
    headers = task_headers(eta=eta)
    payload = codec.encode_message(BODY, headers)

    clock.now = SIGNED_AT + 86400 + 200
    assert codec.decode_message(payload, headers) == BODY
    clock.now = SIGNED_AT + 86400 + 400
    with pytest.raises(SignatureError, match="400 s old"):
        codec.decode_message(payload, headers)


def test_no_max_age_means_no_limit() -> None:
    clock = Clock(SIGNED_AT)
    codec = serializer(clock, max_age=None)
    payload = codec.encode_message(BODY, task_headers())

    clock.now = SIGNED_AT + 10 * 365 * 86400

    assert codec.decode_message(payload, task_headers()) == BODY


def test_a_body_signed_without_a_seal_is_refused_where_one_is_required() -> None:
    codec = serializer(Clock(SIGNED_AT), requires_seal=True)
    unsealed = codec.encode(BODY)

    with pytest.raises(SignatureError, match="no seal"):
        codec.decode_message(unsealed, task_headers())


def test_a_body_signed_without_a_seal_passes_where_none_is_required() -> None:
    codec = serializer(Clock(SIGNED_AT), requires_seal=False)

    assert codec.decode_message(codec.encode(BODY), task_headers(task="other")) == BODY


def test_a_malformed_seal_is_refused() -> None:
    codec = serializer(Clock(SIGNED_AT))
    payload = codec.encode([[20, 22], {}, {**EMBED, SEAL_KEY: {"signed_at": "soon"}}])

    with pytest.raises(SignatureError, match="seal is malformed"):
        codec.decode_message(payload, task_headers())


def test_only_a_task_body_can_be_sealed() -> None:
    with pytest.raises(TypeError, match=r"only a task body"):
        seal_body({"not": "a task"}, task_headers(), SIGNED_AT)


def test_signed_content_of_another_type_than_the_inner_serializer_is_refused() -> None:
    codec = serializer(Clock(SIGNED_AT))
    payload = codec.signer.sign("application/x-yaml", "utf-8", b"[[1, 2], {}, {}]")

    with pytest.raises(SignatureError, match="signed content is 'application/x-yaml'"):
        codec.decode(payload)

"""The durable revoke store of every transport: ``record_revokes`` and ``read_revokes``."""

from __future__ import annotations

import time

import pytest

from celeriac.transports.base import Transport
from tests.conftest import BrokerUnderTest

pytestmark = pytest.mark.timeout(60)


def test_nothing_recorded_reads_empty(transport: Transport) -> None:
    assert transport.read_revokes() == {}


def test_recorded_ids_are_read_with_their_expiry(transport: Transport) -> None:
    before = time.time()

    transport.record_revokes(["a", "b"], 60.0)

    revokes = transport.read_revokes()
    assert set(revokes) == {"a", "b"}
    assert all(before + 59 <= expiry <= time.time() + 61 for expiry in revokes.values())


def test_reading_does_not_consume_the_records(transport: Transport) -> None:
    transport.record_revokes(["a"], 60.0)

    first = transport.read_revokes()
    second = transport.read_revokes()

    assert set(first) == set(second) == {"a"}


def test_another_connection_reads_what_was_recorded(
    transport: Transport, broker_under_test: BrokerUnderTest
) -> None:
    transport.record_revokes(["a"], 60.0)
    transport.record_revokes(["b", "c"], 60.0)
    later = broker_under_test.connect()

    try:
        revokes = later.read_revokes()
    finally:
        later.close()

    assert set(revokes) == {"a", "b", "c"}


def test_expired_ids_are_left_out(transport: Transport) -> None:
    transport.record_revokes(["short"], 0.5)
    transport.record_revokes(["long"], 60.0)

    time.sleep(0.8)

    assert set(transport.read_revokes()) == {"long"}


def test_revoking_again_keeps_the_later_expiry(transport: Transport) -> None:
    transport.record_revokes(["a"], 60.0)
    first = transport.read_revokes()["a"]

    transport.record_revokes(["a"], 1.0)
    transport.record_revokes(["a"], 120.0)

    assert transport.read_revokes()["a"] >= first + 59

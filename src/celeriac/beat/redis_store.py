"""Beat's state in Redis: the broker's, or the result backend's (edge layer).

Four keys, after the store's ``global_keyprefix``; the ``{beat}`` hash tag puts them in
one Redis Cluster slot, so one Lua script may touch them all::

    celeriac:{beat}:lease         string: the leading beat's id, expiring (PX) unless renewed
    celeriac:{beat}:last_run      hash: entry name -> last run (microseconds since the epoch)
    celeriac:{beat}:run_count     hash: entry name -> runs sent
    celeriac:{beat}:fingerprint   hash: entry name -> fingerprint of its schedule

The lease is taken with ``SET NX PX`` and renewed by ``renew_lease.lua``, which extends
it only for its holder; ``claim_run.lua`` checks the holder and the last run and records
the new one in one step, so Redis's one-script-at-a-time execution makes each atomic.
Lease expiry runs on the server's clock.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import redis

from celeriac.beat.store import EntryState, from_microseconds, to_microseconds
from celeriac.exceptions import OperationalError
from celeriac.transports import redact_url
from celeriac.transports.redis_connection import connect_client
from celeriac.transports.redis_keys import check_prefix

__all__ = ["RedisStore", "StoreKeys"]

SCRIPT_NAMES: Final = ("renew_lease", "release_lease", "claim_run", "sync_entries")


@dataclass(frozen=True, slots=True)
class StoreKeys:
    """The names of the store's keys under one prefix."""

    lease: str
    last_run: str
    run_count: str
    fingerprint: str

    @classmethod
    def under(cls, prefix: str) -> StoreKeys:
        """The keys after ``global_keyprefix`` ``prefix``."""
        base = f"{check_prefix(prefix)}celeriac:{{beat}}"
        return cls(f"{base}:lease", f"{base}:last_run", f"{base}:run_count", f"{base}:fingerprint")


def _script_source(name: str) -> str:
    path = resources.files("celeriac.beat").joinpath(f"redis_scripts/{name}.lua")
    return path.read_text(encoding="utf-8")


class RedisStore:
    """The ``ScheduleStore`` of a Redis server at ``url``; ``options`` are the transport (or
    result backend) options, for the connection settings among them."""

    def __init__(self, url: str, options: Mapping[str, Any], *, prefix: str = "") -> None:
        self.url = url
        self.keys = StoreKeys.under(prefix)
        self._client = connect_client(url, options)
        self._scripts = {
            name: self._client.register_script(_script_source(name)) for name in SCRIPT_NAMES
        }

    @property
    def location(self) -> str:
        return f"{redact_url(self.url)} (keys {self.keys.lease.removesuffix(':lease')}:*)"

    def hold_lease(self, owner: str, seconds: float) -> bool:
        milliseconds = max(1, int(seconds * 1000))
        with self._errors():
            renewed = self._scripts["renew_lease"](
                keys=[self.keys.lease], args=[owner, milliseconds]
            )
            if renewed:
                return True
            return bool(self._client.set(self.keys.lease, owner, nx=True, px=milliseconds))

    def release_lease(self, owner: str) -> None:
        with self._errors():
            self._scripts["release_lease"](keys=[self.keys.lease], args=[owner])

    def sync_entries(
        self, fingerprints: Mapping[str, str], now: datetime.datetime
    ) -> dict[str, EntryState]:
        arguments: list[str | int] = [to_microseconds(now)]
        for name, fingerprint in fingerprints.items():
            arguments += [name, fingerprint]
        keys = [self.keys.last_run, self.keys.run_count, self.keys.fingerprint]
        with self._errors():
            last_runs, counts = self._scripts["sync_entries"](keys=keys, args=arguments)
        runs = dict(zip(last_runs[::2], last_runs[1::2], strict=True))
        totals = dict(zip(counts[::2], counts[1::2], strict=True))
        return {
            name.decode(): EntryState(from_microseconds(int(value)), int(totals.get(name, 0)))
            for name, value in runs.items()
        }

    def claim_run(self, owner: str, name: str, due: datetime.datetime, counted: bool) -> bool:
        keys = [self.keys.lease, self.keys.last_run, self.keys.run_count]
        arguments: list[str | int] = [owner, name, to_microseconds(due), int(counted)]
        with self._errors():
            return bool(self._scripts["claim_run"](keys=keys, args=arguments))

    def close(self) -> None:
        self._client.close()
        self._client.connection_pool.disconnect()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Report a lost or slow connection as the store being unavailable."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise OperationalError(f"beat state in {redact_url(self.url)}: {exc}") from exc

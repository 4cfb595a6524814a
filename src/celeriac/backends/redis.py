"""The Redis result backend (edge layer): ``redis://``, ``rediss://``, ``redis+socket://``
and ``sentinel://`` (the client is built in ``redis_client.py``).

Results are stored as Celery's Redis backend stores them (wire protocol §7.1), so a Celery
client reads what a celeriac worker writes and the other way round: the key is
``celery-task-meta-<task_id>`` (after ``global_keyprefix``, to which ``_`` is added unless
it already ends in one of ``:_-.``), the value is the result-meta dict encoded with the
result serializer and no envelope, ``result_expires`` is the key's TTL, and every stored
state is PUBLISHed on a channel named like the key, which is what Celery's ``.get()``
listens to. The serializer is not recorded with the value, so a reader decodes with its
own serializer, as Celery does.

A stored SUCCESS is never overwritten. With the JSON serializer ``store`` is one Lua
script (``redis_scripts/store_json.lua``) that reads the stored status with cjson; with
other serializers, or a stored value cjson cannot read, it reads the key under WATCH and
writes in MULTI/EXEC, retrying when another writer got in between, because the check has
to decode the stored value and Lua cannot read pickle or YAML.

Saved groups and chord counters are Celery 5.7's too (wire protocol §7.3): a group is
``celery-taskset-meta-<group_id>`` holding ``{"result": <result tuple>}``, and a chord's
counter lives in that key's ``.j``, ``.s``, ``.t``, ``.d`` and ``.c`` siblings, changed
only by the Lua scripts in ``redis_scripts/``, so Celery and celeriac workers can finish
header tasks of one chord and exactly one of them sends the body. ``.j`` is a sorted set
scored by ``group_index``, Celery's default, so the body gets the header results in
``group_index`` order. With ``result_backend_transport_options={"result_chord_ordered":
False}`` it is a list instead, as Celery keeps it then: the results are appended as they
arrive and the body gets them in arrival order, and as the list records no group index,
their ``ChordPart.group_index`` is None. Every worker sharing a result store must be
configured alike: a ``.j`` of the other type fails with a ``BackendError`` that says so.

``redis+socket:///path/to/redis.sock?virtual_host=1`` names a Unix socket and database,
as in Celery. ``global_keyprefix`` may also be given in the URL's query string, a
celeriac extension that lets one URL carry a private key space.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis
import redis.client

from celeriac import serialization
from celeriac.backends import accepted_content_types
from celeriac.backends.base import (
    CHORD_CLAIM_EXPIRES,
    CHORD_DONE_EXPIRES,
    LONGEST_WAIT,
    BackendError,
    BackendUnavailable,
    ChordPart,
    ChordProgress,
    Meta,
    ResultTuple,
    next_wait,
)
from celeriac.backends.redis_client import result_store_client
from celeriac.exceptions import DecodeError, TimeoutError
from celeriac.states import READY_STATES, SUCCESS
from celeriac.transports import redact_url

TASK_KEY_PREFIX = "celery-task-meta-"
GROUP_KEY_PREFIX = "celery-taskset-meta-"

# Characters after which Celery adds no "_" between global_keyprefix and its own prefixes.
_PREFIX_SEPARATORS = ":_-."

# What store_json.lua returns when the stored value is not JSON it can read.
_STORE_UNDECIDED = -1

# Keys per MGET: bounds the size of one command and of one reply.
_KEYS_PER_MGET = 1000


class RedisBackend:
    """Store results in Redis where Celery's Redis backend keeps them.

    Thread-safe and fork-safe through redis-py's connection pool (a child process opens
    its own connections). ``wait`` subscribes to the key's channel, so it returns as soon
    as any writer, Celery or celeriac, stores a ready state; each thread keeps its
    subscriber connection from one wait to the next, unsubscribing in between.
    """

    def __init__(
        self,
        url: str,
        *,
        serializer: str = "json",
        accept: Collection[str] | None = None,
        expires: float | None = 86400.0,
        global_keyprefix: str | None = None,
        result_chord_ordered: bool = True,
        **options: Any,
    ) -> None:
        self.url = url
        self.chord_ordered = bool(result_chord_ordered)
        self.serializer = serializer
        self.accept = accepted_content_types(serializer, accept)
        self.expires = expires or None
        self._codec = serialization.get_codec(serializer)
        self._client, url_keyprefix = result_store_client(url, options)
        self.key_prefix = task_key_prefix(global_keyprefix or url_keyprefix)
        self.group_key_prefix = group_key_prefix(global_keyprefix or url_keyprefix)
        self._subscribers = threading.local()
        self._chord_part_done = self._client.register_script(_script_source("chord_part_done"))
        self._chord_size = self._client.register_script(_script_source("chord_size"))
        self._chord_finish = self._client.register_script(_script_source("chord_finish"))
        self._store_json = self._client.register_script(_script_source("store_json"))

    def key_for(self, task_id: str) -> str:
        """Return the key (and pub/sub channel) of the task's result."""
        return f"{self.key_prefix}{task_id}"

    def group_key_for(self, group_id: str, suffix: str = "") -> str:
        """Return the key of the group's saved result, or with ``suffix`` a chord key."""
        return f"{self.group_key_prefix}{group_id}{suffix}"

    def store(self, task_id: str, meta: Meta) -> None:
        """Store ``meta`` and publish it, unless SUCCESS is already stored."""
        _, _, body = serialization.dumps(meta, serializer=self.serializer)
        key = self.key_for(task_id)
        expires_ms = None if self.expires is None else max(1, round(self.expires * 1000))
        if self.serializer == "json":
            with self._errors_as_backend_error():
                outcome = self._store_json([key], [body, expires_ms or 0])
            if outcome != _STORE_UNDECIDED:
                return
        with self._errors_as_backend_error(), self._client.pipeline() as pipeline:
            while True:
                try:
                    pipeline.watch(key)  # type: ignore[no-untyped-call]
                    if self._holds_success(_as_bytes(pipeline.get(key))):
                        return
                    pipeline.multi()
                    pipeline.set(key, body, px=expires_ms)
                    pipeline.publish(key, body)
                    pipeline.execute()
                    return
                except redis.WatchError:
                    continue

    def get(self, task_id: str) -> Meta | None:
        """Return the stored meta, or None if nothing is stored (PENDING) or it expired."""
        with self._errors_as_backend_error():
            body = _as_bytes(self._client.get(self.key_for(task_id)))
        return None if body is None else self._decode(body)

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Meta]:
        """Return the stored meta of each id that has one, with one MGET per 1000 ids."""
        unique_ids = list(dict.fromkeys(task_ids))
        found: dict[str, Meta] = {}
        for start in range(0, len(unique_ids), _KEYS_PER_MGET):
            chunk = unique_ids[start : start + _KEYS_PER_MGET]
            with self._errors_as_backend_error():
                bodies = self._client.mget([self.key_for(task_id) for task_id in chunk])
            for task_id, body in zip(chunk, map(_as_bytes, bodies), strict=True):
                if body is not None:
                    found[task_id] = self._decode(body)
        return found

    def wait(self, task_id: str, timeout: float | None, interval: float) -> Meta:
        """Block until a ready state is stored; a PUBLISH on the key's channel wakes us.

        The channel is subscribed before the key is read, so no store is missed. The key
        is also read every ``interval`` seconds, for writers that do not publish, and again
        after the subscription is re-made when its connection drops.

        Raises:
            TimeoutError: no ready state was stored within ``timeout`` seconds.
            BackendError: Redis cannot be reached.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        meta = self.get(task_id)
        if meta is not None and meta["status"] in READY_STATES:
            return meta
        key = self.key_for(task_id)
        while True:
            try:
                return self._wait_subscribed(key, deadline, interval)
            except (redis.ConnectionError, redis.TimeoutError):
                # The subscription connection dropped: subscribe again and re-read the
                # key, which covers any store published while we were not listening.
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError("The operation timed out.") from None

    def forget(self, task_id: str) -> None:
        """Delete what is stored for the task."""
        with self._errors_as_backend_error():
            self._client.delete(self.key_for(task_id))

    def cleanup(self) -> int:
        """Return 0: Redis deletes each result itself when its TTL runs out."""
        return 0

    def save_group(self, group_id: str, result: ResultTuple) -> None:
        """Store the group's result tuple and publish it, as ``GroupResult.save`` does."""
        _, _, body = serialization.dumps({"result": result}, serializer=self.serializer)
        key = self.group_key_for(group_id)
        with self._errors_as_backend_error(), self._client.pipeline() as pipeline:
            pipeline.set(key, body, px=self._expires_ms() or None)
            pipeline.publish(key, body)
            pipeline.execute()

    def restore_group(self, group_id: str) -> ResultTuple | None:
        """Return the group's saved result tuple, or None if none is stored."""
        with self._errors_as_backend_error():
            body = _as_bytes(self._client.get(self.group_key_for(group_id)))
        if body is None:
            return None
        result: ResultTuple = self._decode(body)["result"]
        return result

    def delete_group(self, group_id: str) -> None:
        """Delete the group's saved result tuple."""
        with self._errors_as_backend_error():
            self._client.delete(self.group_key_for(group_id))

    def set_chord_size(
        self, group_id: str, size: int, *, claim_expires: float = CHORD_CLAIM_EXPIRES
    ) -> ChordProgress:
        """Set ``.s`` and drop ``.c``; claim the chord if every header task already reported."""
        keys = [self.group_key_for(group_id, suffix) for suffix in (".s", ".c", ".j", ".t")]
        token = uuid.uuid4().hex
        arguments: list[int | str] = [
            size,
            self._expires_ms(),
            _milliseconds(claim_expires),
            token,
            int(self.chord_ordered),
        ]
        with self._errors_as_backend_error(), self._chord_type_errors(group_id):
            ready, total_diff, claimed, recorded = self._chord_size(keys, arguments)
        return self._progress(ready, size, total_diff, claimed, token, recorded)

    def add_to_chord(self, group_id: str, count: int = 1) -> None:
        """Add ``count`` to the chord's ``.t``, the header results expected past ``.s``."""
        key = self.group_key_for(group_id, ".t")
        with self._errors_as_backend_error(), self._client.pipeline() as pipeline:
            pipeline.incrby(key, count)
            if self.expires is not None:
                pipeline.pexpire(key, self._expires_ms())
            pipeline.execute()

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
        """Record the header result in ``.j`` with ``chord_part_done.lua``; claim if complete.

        In list mode (``result_chord_ordered=False``) the claimant's parts are in the order
        the header results arrived, each with a ``group_index`` of None.
        """
        _, _, value = serialization.dumps([1, task_id, state, result], serializer=self.serializer)
        suffixes = (".j", ".t", ".s", ".d", "", ".c")
        keys = [self.group_key_for(group_id, suffix) for suffix in suffixes]
        token = uuid.uuid4().hex
        score: int | str = "+inf" if group_index is None else group_index
        expires = self._expires_ms()
        arguments: list[bytes | int | str] = [
            task_id,
            value,
            score,
            int(self.chord_ordered),
            expires,
            expires,
            _milliseconds(claim_expires),
            token,
        ]
        with self._errors_as_backend_error(), self._chord_type_errors(group_id):
            ready, total_diff, size, claimed, recorded = self._chord_part_done(keys, arguments)
        if ready == -1:
            return ChordProgress(0, None, is_finished=True)
        return self._progress(ready, size, total_diff, claimed, token, recorded)

    def finish_chord(self, group_id: str, claim: str) -> bool:
        """Delete ``.j .t .s .d`` and set ``.c`` to "done" if ``claim`` still holds it."""
        keys = [self.group_key_for(group_id, suffix) for suffix in (".c", ".j", ".t", ".s", ".d")]
        with self._errors_as_backend_error():
            cleaned = self._chord_finish(keys, [claim, _milliseconds(CHORD_DONE_EXPIRES)])
        return bool(cleaned)

    def close(self) -> None:
        """Close the pool's connections; a later call opens new ones."""
        self._client.connection_pool.disconnect()

    def _expires_ms(self) -> int:
        """Return ``result_expires`` in milliseconds for the scripts, 0 for never."""
        return 0 if self.expires is None else _milliseconds(self.expires)

    def _progress(
        self,
        ready: int,
        size: bytes | int | None,
        total_diff: bytes | None,
        claimed: int,
        token: str,
        recorded: Sequence[bytes],
    ) -> ChordProgress:
        """Build the progress a script reported, with the ``.j`` entries it read if claimed.

        From a sorted set ``recorded`` alternates members and scores; from a list it holds
        the members alone, in arrival order.
        """
        expected = None if size is None else int(size) + int(total_diff or 0)
        if not claimed:
            return ChordProgress(ready, expected)
        if self.chord_ordered:
            parts = tuple(
                self._decode_part(member, score)
                for member, score in zip(recorded[::2], recorded[1::2], strict=True)
            )
        else:
            parts = tuple(self._decode_part(member, None) for member in recorded)
        return ChordProgress(ready, expected, token, parts)

    def _decode_part(self, member: bytes, score: bytes | None) -> ChordPart:
        """Decode a ``.j`` member, ``[1, task_id, state, result]`` as Celery writes it.

        ``score`` is its sorted-set score, or None from a list, which keeps no group index.
        """
        decoded = serialization.loads(
            member, self._codec.content_type, self._codec.content_encoding, accept=self.accept
        )
        _, task_id, state, result = decoded
        if score is None or score in (b"inf", b"+inf"):
            return ChordPart(task_id, None, state, result)
        return ChordPart(task_id, int(float(score)), state, result)

    def _wait_subscribed(self, key: str, deadline: float | None, interval: float) -> Meta:
        pubsub = self._subscribed(key)
        try:
            while True:
                with self._errors_as_backend_error():
                    body = _as_bytes(self._client.get(key))
                meta = self._ready_meta(body)
                if meta is not None:
                    return meta
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("The operation timed out.")
                meta = self._next_ready_message(pubsub, key, next_wait(remaining, interval))
                if meta is not None:
                    return meta
        except BaseException:
            self._drop_subscriber()
            raise
        finally:
            if getattr(self._subscribers, "pubsub", None) is pubsub:
                # Unconfirmed: a late confirmation or message is skipped by the next wait.
                try:
                    pubsub.unsubscribe(key)
                except (redis.RedisError, OSError):
                    self._drop_subscriber()

    def _subscribed(self, key: str) -> redis.client.PubSub:
        """This thread's subscriber, subscribed to ``key``.

        A kept subscriber whose server went away since the last wait fails once; then a
        fresh connection is tried before the error is reported.
        """
        try:
            with self._errors_as_backend_error():
                try:
                    pubsub = self._subscriber()
                    _subscribe(pubsub, key)
                except (redis.ConnectionError, redis.TimeoutError):
                    self._drop_subscriber()
                    pubsub = self._subscriber()
                    _subscribe(pubsub, key)
        except BaseException:
            self._drop_subscriber()
            raise
        return pubsub

    def _subscriber(self) -> redis.client.PubSub:
        """This thread's subscriber connection, made anew in a forked child."""
        local = self._subscribers
        if getattr(local, "pid", None) != os.getpid() or local.pubsub is None:
            local.pubsub = self._client.pubsub()
            local.pid = os.getpid()
        pubsub: redis.client.PubSub = local.pubsub
        return pubsub

    def _drop_subscriber(self) -> None:
        """Close this thread's subscriber after a failure: the next wait starts clean."""
        pubsub = getattr(self._subscribers, "pubsub", None)
        self._subscribers.pubsub = None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()

    def _next_ready_message(
        self, pubsub: redis.client.PubSub, key: str, wait: float
    ) -> Meta | None:
        """Return a ready meta published on ``key`` within ``wait`` seconds, or None."""
        channel = key.encode()
        wait_until = time.monotonic() + wait
        while (remaining := wait_until - time.monotonic()) > 0:
            message = pubsub.get_message(timeout=remaining)
            if (
                message is not None
                and message["type"] == "message"
                and message["channel"] == channel
            ):
                meta = self._ready_meta(message["data"])
                if meta is not None:
                    return meta
        return None

    def _ready_meta(self, body: bytes | None) -> Meta | None:
        if body is None:
            return None
        meta = self._decode(body)
        return meta if meta.get("status") in READY_STATES else None

    def _holds_success(self, body: bytes | None) -> bool:
        return body is not None and self._status(body) == SUCCESS

    def _status(self, body: bytes) -> str | None:
        """Return the stored meta's status, or None when this backend cannot decode it."""
        try:
            meta = self._decode(body)
        except DecodeError:
            return None
        status = meta.get("status")
        return status if isinstance(status, str) else None

    def _decode(self, body: bytes) -> Meta:
        meta = serialization.loads(
            body, self._codec.content_type, self._codec.content_encoding, accept=self.accept
        )
        if not isinstance(meta, dict):
            raise DecodeError(f"stored result is not a result-meta dict: {meta!r:.100}")
        return meta

    @contextmanager
    def _chord_type_errors(self, group_id: str) -> Iterator[None]:
        """Explain a chord key of the wrong type: workers disagree on ``result_chord_ordered``."""
        try:
            yield
        except redis.ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            kind = "sorted set" if self.chord_ordered else "list"
            raise BackendError(
                f"Redis result store {redact_url(self.url)}: chord {group_id} has results "
                f"that are not a {kind}, as this backend keeps them with "
                f"result_chord_ordered={self.chord_ordered}; every worker sharing the store "
                f"needs the same result_backend_transport_options ({exc})"
            ) from exc

    @contextmanager
    def _errors_as_backend_error(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BackendUnavailable(f"Redis result store {redact_url(self.url)}: {exc}") from exc
        except redis.RedisError as exc:
            raise BackendError(f"Redis result store {redact_url(self.url)}: {exc}") from exc


def task_key_prefix(global_keyprefix: str | None) -> str:
    """Return the prefix of task result keys, after ``global_keyprefix`` as Celery joins it."""
    return _with_global_keyprefix(global_keyprefix, TASK_KEY_PREFIX)


def group_key_prefix(global_keyprefix: str | None) -> str:
    """Return the prefix of group and chord keys, after ``global_keyprefix``."""
    return _with_global_keyprefix(global_keyprefix, GROUP_KEY_PREFIX)


def _with_global_keyprefix(global_keyprefix: str | None, prefix: str) -> str:
    if not global_keyprefix:
        return prefix
    if global_keyprefix[-1] not in _PREFIX_SEPARATORS:
        global_keyprefix += "_"
    return f"{global_keyprefix}{prefix}"


@functools.cache
def _script_source(name: str) -> str:
    """Read a Lua script shipped in ``redis_scripts/``."""
    path = resources.files("celeriac.backends").joinpath(f"redis_scripts/{name}.lua")
    return path.read_text(encoding="utf-8")


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _subscribe(pubsub: redis.client.PubSub, channel: str) -> None:
    """Subscribe and wait for the server's confirmation, so later stores reach us.

    What an earlier wait on this connection left unread (its unsubscribe confirmation,
    late messages) is skipped.
    """
    pubsub.subscribe(channel)
    expected = channel.encode()
    give_up_at = time.monotonic() + LONGEST_WAIT
    while (remaining := give_up_at - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=remaining)
        if (
            message is not None
            and message["type"] == "subscribe"
            and message["channel"] == expected
        ):
            return
    raise redis.TimeoutError(f"no confirmation of SUBSCRIBE {channel} from Redis")


def _as_bytes(value: bytes | str | None) -> bytes | None:
    """Narrow a reply: the pool never decodes responses, so values are bytes or None."""
    return value.encode() if isinstance(value, str) else value

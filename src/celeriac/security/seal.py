"""The seal: what ties a signed task body to its headers and to the time it was signed.

Celery's ``auth`` serializer signs the body alone, so a broker-side attacker can keep a
signed body and change the ``task`` header to run another task with its arguments, or
replay it for ever. celeriac puts a seal in the body's ``embed`` mapping before signing::

    [args, kwargs, {"callbacks": ..., ..., "celeriac_seal": {
        "signed_at": 1733472000.5,             # Unix time
        "headers": ["argsrepr", ..., "task"],  # every header present when it was signed
        "digest": "base64 sha256 of those headers' values, canonical JSON"}}]

The seal is inside the signed bytes, so it cannot be removed or changed without breaking
the signature, and a Celery worker verifying the message sees only one embed key more (it
becomes an attribute of the task's request). Headers added after signing (``compression``,
a broker's ``x-`` headers, a ``before_task_publish`` receiver's) are not covered; changing,
adding or removing a covered one is refused. A body signed without a seal (by Celery) has
its body verified and its headers not; the ``hmac`` serializer requires a seal.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celeriac.security.signer import SignatureError

__all__ = ["SEAL_KEY", "Seal", "check_seal", "open_seal", "seal_body"]

SEAL_KEY = "celeriac_seal"


@dataclass(frozen=True, slots=True)
class Seal:
    """A task body's seal, as read back from a verified body."""

    signed_at: float
    headers: tuple[str, ...]
    digest: str


def seal_body(body: Any, headers: Mapping[str, Any], signed_at: float) -> list[Any]:
    """Return the task body ``[args, kwargs, embed]`` with a seal over ``headers`` in embed.

    Raises:
        TypeError: ``body`` is not a task body, or a header value has no JSON form.
    """
    if not _is_task_body(body):
        raise TypeError("only a task body [args, kwargs, embed] can be sealed")
    args, kwargs, embed = body
    names = sorted(headers)
    seal = {"signed_at": signed_at, "headers": names, "digest": _digest(headers, names)}
    return [args, kwargs, {**embed, SEAL_KEY: seal}]


def open_seal(payload: Any) -> tuple[Any, Seal | None]:
    """Take the seal out of a verified task body; None when it has none (Celery signed it).

    Raises:
        SignatureError: the seal is there but not in its shape.
    """
    if not _is_task_body(payload) or SEAL_KEY not in payload[2]:
        return payload, None
    args, kwargs, embed = payload
    embed = dict(embed)
    raw = embed.pop(SEAL_KEY)
    try:
        seal = Seal(float(raw["signed_at"]), tuple(raw["headers"]), str(raw["digest"]))
    except (TypeError, KeyError, ValueError) as exc:
        raise SignatureError("the message's seal is malformed") from exc
    if not all(isinstance(name, str) for name in seal.headers):
        raise SignatureError("the message's seal is malformed")
    return [args, kwargs, embed], seal


def check_seal(
    seal: Seal, headers: Mapping[str, Any], *, max_age: float | None, now: float
) -> None:
    """Check that the headers are those sealed and that the message is not too old.

    Age counts from when it was signed, or from its ``eta`` when that is later: a task
    sent for tomorrow is fresh tomorrow.

    Raises:
        SignatureError: a covered header was changed, added or removed, or the message is
            older than ``max_age`` seconds.
    """
    try:
        digest = _digest(headers, seal.headers)
    except (TypeError, ValueError) as exc:
        raise SignatureError("the message's headers cannot be checked against its seal") from exc
    if not hmac.compare_digest(digest, seal.digest):
        raise SignatureError("the message's headers were changed after signing")
    if max_age is None:
        return
    start = max(seal.signed_at, _eta(headers) or seal.signed_at)
    age = now - start
    if age > max_age:
        signed = datetime.datetime.fromtimestamp(seal.signed_at, datetime.UTC).isoformat()
        raise SignatureError(
            f"the message is {age:.0f} s old (signed at {signed}), more than"
            f" security_max_age={max_age:g} s: a replay, or it waited too long in the queue"
        )


def _is_task_body(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 3 and isinstance(value[2], dict)


def _digest(headers: Mapping[str, Any], names: tuple[str, ...] | list[str]) -> str:
    """SHA-256 of the named headers' values; a missing header differs from a null one."""
    values = {name: headers[name] for name in names if name in headers}
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return base64.b64encode(hashlib.sha256(canonical.encode("ascii")).digest()).decode("ascii")


def _eta(headers: Mapping[str, Any]) -> float | None:
    """The ``eta`` header as Unix time; None when absent or unreadable."""
    value = headers.get("eta")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()

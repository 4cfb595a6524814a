"""Retry policy: exponential backoff with jitter, the ``autoretry_for`` wrapper, and
retrying the result store while it is unreachable."""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac.backends.base import BackendUnavailable
from celeriac.exceptions import Ignore, Retry

logger = logging.getLogger("celeriac.backends")

T = TypeVar("T")

if TYPE_CHECKING:
    from celeriac.task import Task


def exponential_backoff(
    factor: float,
    retries: int,
    maximum: float,
    *,
    full_jitter: bool = False,
    randrange: Callable[[int], int] = random.randrange,
) -> float:
    """Return the countdown for retry number ``retries``: ``factor * 2**retries``, capped.

    With full jitter the countdown is drawn uniformly from 0 to that value, which spreads
    retries of many failing tasks apart.
    """
    countdown = min(maximum, factor * (2**retries))
    if full_jitter:
        countdown = randrange(int(countdown) + 1)
    return max(0.0, float(countdown))


def retry_while_unavailable(
    call: Callable[[], T],
    *,
    max_retries: float,
    base_sleep_ms: float,
    max_sleep_ms: float,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Call ``call`` until the result store takes it, as ``result_backend_always_retry`` asks.

    Only ``BackendUnavailable`` is retried, after a pause drawn from a doubling range
    (full jitter, in milliseconds as Celery's settings give it); other errors, and the
    last one past ``max_retries``, propagate. ``sleep`` is ``time.sleep`` looked up at
    each pause, so a process patched for gevent after this module was imported still
    pauses only the waiting greenlet.
    """
    retries = 0
    while True:
        try:
            return call()
        except BackendUnavailable as exc:
            if retries >= max_retries:
                raise
            if retries == 0:
                logger.warning("Result store unreachable, retrying until it is back: %s", exc)
            pause = exponential_backoff(base_sleep_ms, retries, max_sleep_ms, full_jitter=True)
            (sleep or time.sleep)(pause / 1000)
            retries += 1


def wrap_autoretry(task: Task[Any, Any]) -> None:
    """Make ``task.run`` call ``task.retry`` when it raises one of ``autoretry_for``."""
    original = task.run

    @functools.wraps(original)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except (Ignore, Retry):
            raise
        except task.dont_autoretry_for:
            raise
        except task.autoretry_for as exc:
            options = dict(task.retry_kwargs)
            if task.retry_backoff:
                options["countdown"] = exponential_backoff(
                    float(task.retry_backoff),
                    task.request.retries,
                    task.retry_backoff_max,
                    full_jitter=task.retry_jitter,
                )
            raise task.retry(exc=exc, **options) from exc

    task.run = run  # type: ignore[method-assign]

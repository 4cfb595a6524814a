"""Retry policy: exponential backoff with jitter, and the ``autoretry_for`` wrapper."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import Ignore, Retry

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

"""Reaching the broker again: the worker's wait, with backoff, when it cannot be reached.

The worker calls :func:`wait_for_broker` before it starts (``broker_connection_retry_on_startup``)
and whenever fetching fails (``broker_connection_retry``). Waits are 2 seconds, then 3 at
most, and end early when the worker shuts down. kombu's ``ensure_connection`` lets them
grow to 30 s, which can leave a worker idle for up to 30 s after its broker came back;
celeriac resumes within about 3 s of the broker's return (the fault battery's broker
restart row asks for 5 s on a loaded machine), at the cost of one connection attempt per
worker every 3 s during an outage.
A broker that answers with a refusal (wrong password, unknown virtual host or database)
ends the wait at once: no number of retries would change its answer.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from celeriac.connection import PROBE_QUEUE
from celeriac.messaging import retry_over_time
from celeriac.transports import redact_url
from celeriac.transports.base import BrokerRefused, TransportError

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger("celeriac.worker")

RETRY_POLICY = {"interval_start": 2.0, "interval_step": 2.0, "interval_max": 3.0}


class ShuttingDown(Exception):
    """The worker began shutting down while it waited for the broker."""


def wait_for_broker(app: Celeriac, *, retry: bool, stopping: threading.Event) -> bool:
    """Make one round trip to the app's broker, retrying while it is unreachable.

    With ``retry`` false one failure is final. Otherwise up to
    ``broker_connection_max_retries`` retries are made (None: forever). Each failure is
    logged with the URL's password masked. Returns True once the broker answered, False
    when the retries ran out or ``stopping`` was set.
    """
    url = redact_url(app.broker_url)
    max_retries = app.conf.broker_connection_max_retries if retry else 0
    attempts = 0

    def probe() -> None:
        nonlocal attempts
        if stopping.is_set():
            raise ShuttingDown
        attempts += 1
        app.transport.queue_size(PROBE_QUEUE)

    def report(exc: TransportError, interval: float) -> None:
        logger.error(
            "consumer: Cannot connect to %s: %s.\nTrying again in %.2f seconds... (%d/%s)",
            url,
            reason(exc, url),
            interval,
            attempts,
            "unlimited" if max_retries is None else max_retries,
        )

    policy = {**RETRY_POLICY, "max_retries": max_retries}
    try:
        retry_over_time(probe, policy, errback=report, sleep=stopping.wait)
    except ShuttingDown:
        return False
    except BrokerRefused as exc:
        logger.critical(
            "consumer: Cannot connect to %s: %s. Not retrying: waiting will not change the"
            " broker's answer.",
            url,
            reason(exc, url),
        )
        return False
    except TransportError as exc:
        logger.critical("consumer: Cannot connect to %s: %s. Giving up.", url, reason(exc, url))
        return False
    if attempts > 1:
        logger.info("Connected to %s", url)
    return True


def sentence(exc: Exception) -> str:
    """The error's message without a final full stop, to sit inside a sentence of ours."""
    return str(exc).rstrip(".")


def reason(exc: Exception, url: str) -> str:
    """The error's message for a line that names ``url`` itself.

    Transport errors start by naming their broker (``Redis broker <url>: ...``); that part
    is left out, so the line says the URL once.
    """
    text = sentence(exc)
    _, found, rest = text.partition(f"{url}: ")
    return rest if found else text

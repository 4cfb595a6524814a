"""Pidbox: the worker's mailbox for remote control (edge layer).

A thread reads requests from the ``<control_exchange>.pidbox`` channel, runs the
command (``worker/control.py``) for requests meant for this node, and sends one reply
to those that want one. A request the client stopped waiting for (``expires``) is
skipped; a command that raises is answered ``{"error": repr(exc)}``, as Celery does; a
request that cannot be read is logged and dropped. The worker goes on in every case.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celeriac.exceptions import DecodeError
from celeriac.protocol.pidbox import (
    ControlRequest,
    build_reply,
    parse_request,
    reply_channel,
    request_channel,
)
from celeriac.transports.base import Subscription, Transport, TransportError
from celeriac.worker.control import ControlState, Panel

logger = logging.getLogger("celeriac.worker")

POLL_SECONDS = 0.5
MAX_RESUBSCRIBE_DELAY = 5.0


class Pidbox:
    """Answers remote-control requests for one node while started."""

    def __init__(self, state: ControlState, transport: Transport, mailbox: str) -> None:
        self.state = state
        self.transport = transport
        self.mailbox = mailbox
        self._stopped = threading.Event()
        self._subscription: Subscription | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Subscribe (so no request sent after this returns is missed), then start reading."""
        self._subscription = self.transport.subscribe(request_channel(self.mailbox))
        self._thread = threading.Thread(target=self._run, name="celeriac-pidbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading requests."""
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._subscription is not None:
            self._subscription.close()

    def handle(self, request: ControlRequest) -> None:
        """Run one request's command if it is meant for this node, and reply if asked."""
        state = self.state
        if not request.is_for(state.hostname) or request.has_expired(time.time()):
            return
        clock = state.app.clock
        if request.clock is not None:
            clock.adjust(request.clock)
        value = self._dispatch(request)
        meta = Panel.meta.get(request.method)
        if not request.wants_reply or (meta is not None and not meta.sends_reply):
            return
        reply = build_reply(request, state.hostname, value, clock=clock.forward())
        try:
            self.transport.broadcast(reply_channel(self.mailbox), reply)
        except TransportError as exc:
            logger.warning("Could not reply to control command %r: %s", request.method, exc)

    def _dispatch(self, request: ControlRequest) -> Any:
        try:
            command = Panel.data[request.method]
            return command(self.state, **request.arguments)
        except Exception as exc:
            logger.exception("Control command %r failed", request.method)
            return {"error": repr(exc)}

    def _run(self) -> None:
        delay = POLL_SECONDS
        while not self._stopped.is_set():
            try:
                if self._subscription is None:
                    self._subscription = self.transport.subscribe(request_channel(self.mailbox))
                envelopes = self._subscription.get(POLL_SECONDS)
                delay = POLL_SECONDS
            except TransportError as exc:
                logger.warning("Remote control: %s; listening again in %.1f s", exc, delay)
                self._subscription = None
                self._stopped.wait(delay)
                delay = min(delay * 2, MAX_RESUBSCRIBE_DELAY)
                continue
            for envelope in envelopes:
                try:
                    request = parse_request(envelope)
                except DecodeError as exc:
                    logger.warning("Ignoring a control message that cannot be read: %s", exc)
                    continue
                self.handle(request)

"""Monitoring events: send them, receive them, order them (services layer).

Celery's ``celery.events`` names: :class:`EventDispatcher` (seed 003), :class:`EventReceiver`,
:func:`Event` and :func:`group_from`, plus the :class:`LamportClock` they share and
:func:`anon_nodename`, the ``gen<pid>@<host>`` name of processes that are not nodes.
The cluster state that monitors build from the events is in :mod:`celeriac.events.state`
(``app.events.State``), as Celery keeps it in ``celery.events.state``.
"""

from celeriac.events.clock import LamportClock
from celeriac.events.dispatcher import EventDispatcher, anon_nodename
from celeriac.events.receiver import EventReceiver
from celeriac.protocol.event import Event, group_from

__all__ = [
    "Event",
    "EventDispatcher",
    "EventReceiver",
    "LamportClock",
    "anon_nodename",
    "group_from",
]

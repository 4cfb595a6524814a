"""Beat: sends periodic tasks on their schedules (edge layer; ``celeriac beat``, ``worker -B``).

``entry`` reads ``beat_schedule``, ``scheduler`` decides what is due, ``store`` keeps the
lease and the last runs (in the broker or result store, so beats can share them) and
``service`` runs the loop. The core never imports this package.
"""

from celeriac.beat.entry import ScheduleEntry
from celeriac.beat.service import EmbeddedService, Service

__all__ = ["EmbeddedService", "ScheduleEntry", "Service"]

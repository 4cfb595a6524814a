"""``celery.utils.log`` compatibility: ``from celeriac.utils.log import get_task_logger`` works.

Re-exports only; the loggers live in ``celeriac.log``.
"""

from celeriac.log import get_logger, get_task_logger

__all__ = ["get_logger", "get_task_logger"]

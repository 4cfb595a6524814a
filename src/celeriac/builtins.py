"""Tasks every app has, under Celery's ``celery.*`` names so Celery clients can call them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celeriac.app import Celeriac


def register_builtins(app: Celeriac) -> None:
    """Add the builtin tasks to ``app``."""

    @app.task(name="celery.backend_cleanup", ignore_result=True, shared=False)
    def backend_cleanup() -> int:
        """Delete expired results from the result backend."""
        return app.backend.cleanup()

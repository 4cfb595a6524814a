"""Tasks every app has, under Celery's ``celery.*`` names so Celery clients can call them.

Besides result cleanup these are the canvas's helpers that travel as tasks: map,
starmap and chunks, ``accumulate`` (the body that makes a replacing group one
result), and ``chord_unlock``, which Celery clients send for chords on result
backends that have no chord counter of Celery's own (wire protocol §7.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.canvas.chord import chord_error, fail_chord_body
from celeriac.canvas.chunks import chunks
from celeriac.canvas.signature import maybe_signature
from celeriac.exceptions import ChordError
from celeriac.protocol.result_meta import result_from_meta
from celeriac.result import GroupResult, result_from_tuple

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task


def register_builtins(app: Celeriac) -> None:
    """Add the builtin tasks to ``app``."""

    @app.task(name="celery.backend_cleanup", ignore_result=True, shared=False)
    def backend_cleanup() -> int:
        """Delete expired results from the result backend."""
        return app.backend.cleanup()

    @app.task(name="celery.map", shared=False)
    def xmap(task: dict[str, Any], it: Sequence[Any]) -> list[Any]:
        """Call ``task`` here with each item."""
        sig = maybe_signature(task, app=app)
        assert sig is not None
        return [sig(item) for item in it]

    @app.task(name="celery.starmap", shared=False)
    def xstarmap(task: dict[str, Any], it: Sequence[Sequence[Any]]) -> list[Any]:
        """Call ``task`` here with each item as its arguments."""
        sig = maybe_signature(task, app=app)
        assert sig is not None
        return [sig(*item) for item in it]

    @app.task(name="celery.chunks", shared=False)
    def send_chunks(task: dict[str, Any], it: Sequence[Any], n: int) -> GroupResult:
        """Send ``it`` in parts of ``n`` as a group of starmap tasks; return its result."""
        result: GroupResult = chunks(task, it, n, app=app).apply_async()
        return result

    @app.task(name="celery.accumulate", shared=False)
    def accumulate(*args: Any, index: int | None = None) -> Any:
        """Return the argument at ``index``, or all of them."""
        return args if index is None else args[index]

    @app.task(
        name="celery.chord_unlock",
        bind=True,
        shared=False,
        ignore_result=True,
        max_retries=None,
        default_retry_delay=1,
    )
    def unlock_chord(
        self: Task[Any, Any],
        /,
        group_id: str,
        callback: dict[str, Any],
        interval: float | None = None,
        max_retries: int | None = None,
        result: Sequence[Any] | None = None,
        **_: Any,
    ) -> None:
        """Apply a Celery client's chord body once every header result is ready.

        Retries itself every ``interval`` seconds until then; a failed header task
        fails the body with ChordError.
        """
        ids = [result_from_tuple(item, app).id for item in result or ()]
        metas = app.backend.get_many(ids)
        if any(metas.get(task_id, {}).get("status") not in states.READY_STATES for task_id in ids):
            raise self.retry(countdown=1 if interval is None else interval, max_retries=max_retries)
        body = maybe_signature(callback, app=app)
        assert body is not None
        request = self.request
        lineage: dict[str, Any] = {
            "parent_id": request.id,
            "root_id": request.root_id or request.id,
        }
        for task_id in ids:
            meta = metas[task_id]
            if meta.get("status") in states.PROPAGATE_STATES:
                fail_chord_body(app, body, chord_error(task_id, meta.get("result")), lineage)
                return
        values = [result_from_meta(metas[task_id]) for task_id in ids]
        try:
            body.apply_async((values,), **lineage)
        except Exception as error:
            fail_chord_body(app, body, ChordError(f"Callback error: {error!r}"), lineage)

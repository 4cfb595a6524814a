"""The same task module for a Celery worker and a celeriac worker: only the import differs.

``INTEROP_SIDE`` picks the framework (``celery`` or ``celeriac``); ``INTEROP_BROKER``,
``INTEROP_BACKEND`` and ``INTEROP_QUEUE`` say where to meet. The tasks are written as
Celery's documentation writes them, so the module also shows that celeriac runs them as
they are.
"""

import os
from typing import Any

app: Any
if os.environ.get("INTEROP_SIDE") == "celery":
    from celery import Celery

    app = Celery("interop_tasks", broker=os.environ["INTEROP_BROKER"])
else:
    from celeriac import Celeriac

    app = Celeriac("interop_tasks", broker=os.environ["INTEROP_BROKER"])
app.conf.update(
    result_backend=os.environ["INTEROP_BACKEND"],
    task_default_queue=os.environ["INTEROP_QUEUE"],
    result_expires=600,
    result_extended=True,
)


@app.task(name="interop.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="interop.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="interop.retry_once", bind=True, max_retries=3)
def retry_once(self: Any, value: str) -> list[Any]:
    if self.request.retries < 1:
        raise self.retry(countdown=0.2)
    return [value, self.request.retries]


@app.task(name="interop.request_info", bind=True)
def request_info(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    request = self.request
    return {
        "id": request.id,
        "args": list(request.args),
        "kwargs": request.kwargs,
        "retries": request.retries,
        "eta": request.eta,
        "expires": request.expires,
        "routing_key": (request.delivery_info or {}).get("routing_key"),
        "correlation_id": request.correlation_id,
        "root_id": request.root_id,
        "parent_id": request.parent_id,
    }

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


@app.task(name="interop.tsum")
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task(name="interop.echo")
def echo(value: Any) -> Any:
    return value


@app.task(name="interop.record_error")
def record_error(request: Any, exc: BaseException, traceback: Any) -> None:
    """An errback in Celery's ``(request, exc, traceback)`` form: the worker calls it inline,
    so it leaves what it was given in Redis for the test to read."""
    import json

    import redis

    seen = {
        "id": request.id,
        "task": request.task,
        "args": list(request.args),
        "exc": repr(exc),
        "traceback_type": type(traceback).__name__,
        "traceback_tail": str(traceback).strip().splitlines()[-1:],
    }
    with redis.Redis.from_url(os.environ["INTEROP_BACKEND"]) as client:
        client.set(f"interop-errback-{request.id}", json.dumps(seen), ex=600)


@app.task(name="interop.tally", bind=True)
def tally(self: Any, numbers: list[int]) -> int:
    """Sum ``numbers`` and count in Redis how many times this task id ran."""
    import redis

    with redis.Redis.from_url(os.environ["INTEROP_BACKEND"]) as client:
        client.incr(f"interop-runs-{self.request.id}")
        client.expire(f"interop-runs-{self.request.id}", 600)
    return sum(numbers)

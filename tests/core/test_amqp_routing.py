"""``app.amqp.queues`` and ``app.amqp.router``: Celery's queue selection and task_routes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.entity import Exchange, Queue, as_queue, bound_queues
from celeriac.exceptions import QueueNotFound
from celeriac.routing import Route


@pytest.fixture
def make_app() -> Iterator[Any]:
    apps: list[Celeriac] = []

    def make(**settings: Any) -> Celeriac:
        app = Celeriac("routing", broker=f"memory://{uuid.uuid4().hex}", set_as_current=False)
        app.conf.update(settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def resolve(app: Celeriac, name: str, **options: Any) -> Route:
    return app.amqp.router.resolve(name, (), {}, options)


# ---- queues ---------------------------------------------------------------------------


def test_default_queue_is_the_celery_direct_queue(make_app: Any) -> None:
    queues = make_app().amqp.queues
    assert list(queues) == ["celery"]
    queue = queues["celery"]
    assert queue.exchange == Exchange("celery", "direct")
    assert queue.routing_key == "celery"


def test_default_exchange_and_routing_key_follow_the_settings(make_app: Any) -> None:
    app = make_app(
        task_default_queue="default",
        task_default_exchange="tasks",
        task_default_exchange_type="topic",
        task_default_routing_key="task.default",
    )
    queue = app.amqp.queues["default"]
    assert queue.exchange == Exchange("tasks", "topic")
    assert queue.routing_key == "task.default"


def test_task_queues_are_declared_with_the_default_exchange_filled_in(make_app: Any) -> None:
    app = make_app(
        task_queues=[Queue("video", Exchange("media"), "media.video"), Queue("plain")],
        task_queue_max_priority=5,
    )
    queues = app.amqp.queues
    assert set(queues) == {"video", "plain"}
    assert queues["video"].exchange_name == "media"
    assert queues["plain"].exchange == Exchange("celery")
    assert queues["plain"].routing_key == "plain"
    assert queues["video"].max_priority == 5


def test_missing_queue_is_created_on_lookup_when_allowed(make_app: Any) -> None:
    queues = make_app().amqp.queues
    created = queues["reports"]
    assert created == Queue("reports", Exchange("reports"), "reports")
    assert "reports" in queues


def test_missing_queue_is_refused_when_creation_is_off(make_app: Any) -> None:
    app = make_app(task_create_missing_queues=False, task_queues=[Queue("only")])
    with pytest.raises(QueueNotFound, match="'other' missing from task_queues"):
        app.amqp.queues["other"]
    with pytest.raises(QueueNotFound):
        resolve(app, "t", queue="other")


def test_select_deselect_and_consume_from(make_app: Any) -> None:
    app = make_app(task_queues=[Queue("a"), Queue("b"), Queue("c")])
    queues = app.amqp.queues
    assert list(queues.consume_from) == ["a", "b", "c"]
    queues.deselect(["b"])
    assert list(queues.consume_from) == ["a", "c"]
    queues.select(["c"])
    assert list(queues.consume_from) == ["c"]
    queues.deselect("c")
    assert queues.consume_from == {}


def test_select_add_adds_to_the_consumed_subset(make_app: Any) -> None:
    queues = make_app(task_queues=[Queue("a"), Queue("b")]).amqp.queues
    queues.select(["a"])
    added = queues.select_add("w1@host.dq")
    assert added.name == "w1@host.dq"
    assert list(queues.consume_from) == ["a", "w1@host.dq"]
    assert "w1@host.dq" in queues


def test_select_add_without_a_selection_consumes_everything(make_app: Any) -> None:
    queues = make_app().amqp.queues
    queues.select_add("extra")
    assert list(queues.consume_from) == ["celery", "extra"]


def test_old_dict_form_of_task_queues(make_app: Any) -> None:
    app = make_app(
        task_queues={"feeds": {"exchange": "feeds", "exchange_type": "topic", "binding_key": "f.#"}}
    )
    queue = app.amqp.queues["feeds"]
    assert queue.exchange == Exchange("feeds", "topic")
    assert queue.routing_key == "f.#"


def test_kombu_style_queue_objects_are_accepted() -> None:
    class KombuExchange:
        name = "media"
        type = "topic"
        durable = True
        auto_delete = False
        delivery_mode = 2
        arguments = None

    class KombuQueue:
        name = "images"
        exchange = KombuExchange()
        routing_key = "media.image.*"
        max_priority = 9

    queue = as_queue(KombuQueue())
    assert queue.exchange == Exchange("media", "topic", delivery_mode=2)
    assert queue.routing_key == "media.image.*"
    assert queue.max_priority == 9
    with pytest.raises(TypeError, match="not a queue"):
        as_queue(42)


def test_unknown_exchange_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown type 'funnel'"):
        Exchange("x", "funnel")


def test_queues_format_lists_the_consumed_queues(make_app: Any) -> None:
    queues = make_app().amqp.queues
    assert queues.format() == ".> celery           exchange=celery(direct) key=celery"


# ---- bindings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "routing_key", "expected"),
    [
        ("", "anything", ["anything"]),
        ("media", "media.video", ["video"]),
        ("media", "media.audio", []),
        ("feeds", "feed.news.today", ["news"]),
        ("feeds", "feed.sport", ["all-feeds"]),
        ("broadcast", "ignored", ["b1", "b2"]),
    ],
)
def test_bound_queues_follow_exchange_types(
    exchange: str, routing_key: str, expected: list[str]
) -> None:
    queues = [
        Queue("video", Exchange("media"), "media.video"),
        Queue("news", Exchange("feeds", "topic"), "feed.news.#"),
        Queue("all-feeds", Exchange("feeds", "topic"), "feed.*"),
        Queue("b1", Exchange("broadcast", "fanout")),
        Queue("b2", Exchange("broadcast", "fanout")),
    ]
    assert sorted(bound_queues(queues, exchange, routing_key)) == sorted(expected)


# ---- task_routes ----------------------------------------------------------------------


def test_no_route_goes_to_the_default_queue_on_the_default_exchange(make_app: Any) -> None:
    assert resolve(make_app(), "proj.tasks.add") == Route(("celery",), "", "celery")


def test_route_by_exact_name_glob_and_regex(make_app: Any) -> None:
    app = make_app(
        task_routes={
            "feed.tasks.import_feed": {"queue": "feeds"},
            "media.*": "media",
            re.compile(r"(video|image)\.tasks\..*"): {"queue": "visual"},
        }
    )
    assert resolve(app, "feed.tasks.import_feed").queues == ("feeds",)
    assert resolve(app, "media.resize").queues == ("media",)
    assert resolve(app, "image.tasks.crop").queues == ("visual",)
    assert resolve(app, "other.task").queues == ("celery",)


def test_exact_name_wins_over_an_earlier_pattern(make_app: Any) -> None:
    app = make_app(task_routes={"feed.*": "patterned", "feed.tasks.a": "exact"})
    assert resolve(app, "feed.tasks.a").queues == ("exact",)
    assert resolve(app, "feed.tasks.b").queues == ("patterned",)


def test_routers_in_a_list_are_tried_in_order(make_app: Any) -> None:
    calls: list[tuple[str, Any, Any]] = []

    def by_argument(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any):
        calls.append((name, args, kwargs))
        if kwargs.get("urgent"):
            return {"queue": "urgent"}
        return None

    app = make_app(task_routes=[by_argument, {"proj.*": "proj"}])
    assert app.amqp.router.resolve("proj.a", (1,), {"urgent": True}, {}).queues == ("urgent",)
    assert app.amqp.router.resolve("proj.a", (1,), {}, {}).queues == ("proj",)
    assert calls == [("proj.a", (1,), {"urgent": True}), ("proj.a", (1,), {})]


def test_router_named_by_a_string_is_imported(make_app: Any) -> None:
    app = make_app(task_routes=[f"{__name__}:route_to_imported"])
    assert resolve(app, "anything").queues == ("imported",)


def route_to_imported(name: str, args: Any, kwargs: Any, options: Any, **kw: Any) -> str:
    return "imported"


def test_celery3_router_object_with_route_for_task(make_app: Any) -> None:
    class OldRouter:
        def route_for_task(self, task: str, args: Any = None, kwargs: Any = None) -> Any:
            return {"queue": "old"} if task.startswith("legacy.") else None

    app = make_app(task_routes=(OldRouter(),))
    assert resolve(app, "legacy.job").queues == ("old",)
    assert resolve(app, "new.job").queues == ("celery",)


def test_explicit_options_skip_the_routes(make_app: Any) -> None:
    app = make_app(task_routes={"*": "routed"})
    assert resolve(app, "t", queue="chosen") == Route(("chosen",), "", "chosen")
    assert resolve(app, "t").queues == ("routed",)


def test_route_to_a_topic_exchange_reaches_the_bound_queues(make_app: Any) -> None:
    app = make_app(
        task_queues=[
            Queue("default", Exchange("tasks", "topic"), "task.#"),
            Queue("feed_tasks", Exchange("tasks", "topic"), "feed.#"),
        ],
        task_default_queue="default",
        task_routes={"feeds.tasks.*": {"exchange": "tasks", "routing_key": "feed.import"}},
    )
    route = resolve(app, "feeds.tasks.import_feed")
    assert route == Route(("feed_tasks",), "tasks", "feed.import")


def test_route_options_merge_under_the_callers_options(make_app: Any) -> None:
    app = make_app(task_routes={"t": {"queue": "q", "priority": 7, "expires": 10}})
    routed = app.amqp.router.route({"priority": 1}, "t")
    assert routed["queue"] == Queue("q", Exchange("q"), "q")
    assert routed["priority"] == 1
    assert routed["expires"] == 10


def test_route_to_an_exchange_no_queue_is_bound_to_is_refused(make_app: Any) -> None:
    app = make_app(task_routes={"t": {"exchange": "nowhere", "routing_key": "x"}})
    route = resolve(app, "t")
    assert route.queues == ()
    with pytest.raises(QueueNotFound, match="no queue is bound to exchange 'nowhere'"):
        app.send_task("t")


def test_send_task_follows_routes_to_the_queue(make_app: Any) -> None:
    app = make_app(task_routes={"reports.*": {"queue": "reports"}})
    app.send_task("reports.monthly", (2026, 11))
    app.send_task("other")
    assert app.transport.queue_size("reports") == 1
    assert app.transport.queue_size("celery") == 1


def test_routes_are_read_again_after_flush(make_app: Any) -> None:
    app = make_app()
    assert resolve(app, "t").queues == ("celery",)
    app.conf.task_routes = {"t": "later"}
    app.amqp.flush_routes()
    assert resolve(app, "t").queues == ("later",)

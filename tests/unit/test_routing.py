from opsgate.services.chat import ChatTarget
from opsgate.services.routing import Router
from tests.builders import policy_source

DEFAULT = ChatTarget(-1, None)


def router() -> Router:
    return Router(
        policy_source(
            routes=[
                {
                    "name": "pay",
                    "match": {"namespace": "payments"},
                    "chat_id": -2,
                    "thread_id": 9,
                    "subscribers": [-3, -2],
                    "notifiers": ["hook"],
                },
                {"name": "db", "match_re": {"service": "db-.*"}, "subscribers": [-4]},
                {"name": "late", "match": {"namespace": "payments"}, "chat_id": -5},
            ],
            result_subscribers=[-3, -6],
            notifiers={"hook": {"type": "webhook", "url": "http://x/y"}},
        ),
        DEFAULT,
    )


def test_first_matching_route_wins() -> None:
    route = router().route({"namespace": "payments", "service": "db-main"})
    assert route.name == "pay" and route.target == ChatTarget(-2, 9)
    # The card's own chat gets the reply, not a second copy; duplicates collapse.
    assert route.destinations == ("tg:-3", "tg:-6", "notifier:hook")


def test_regex_matchers_are_anchored() -> None:
    assert router().route({"service": "db-main"}).name == "db"
    assert router().route({"service": "my-db-main"}).name == "default"


def test_unmatched_alerts_use_the_default_chat_and_global_subscribers() -> None:
    route = router().route({"namespace": "shop"})
    assert route.target == DEFAULT
    assert route.destinations == ("tg:-3", "tg:-6")


def test_a_route_without_a_chat_keeps_the_default_chat() -> None:
    route = router().route({"service": "db-x"})
    assert route.target == DEFAULT and route.destinations[0] == "tg:-4"

"""Route events applied to a router: forward in time per route, whatever order the table and topic bring them."""

from datetime import UTC, datetime, timedelta

from schemas.events import DeploymentEvent
from serving.gateway.route_events import RouteLog, current_routes_sql, events_from_rows
from serving.gateway.routing import Router

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def change(route: str, weights: dict[str, float], seconds: int, **fields) -> DeploymentEvent:
    values = {"deployment_id": "d1", "base_model": "base", "action": "canary", "status": "succeeded",
              "route": route, "weights": weights, "timestamp": T0 + timedelta(seconds=seconds), **fields}
    return DeploymentEvent(**values)


def test_a_route_moves_forward_only():
    log = RouteLog(Router("base", {}))
    assert log.apply(change("support", {"base": 90, "cand": 10}, 1))
    assert log.apply(change("support", {"base": 50, "cand": 50}, 3))
    assert not log.apply(change("support", {"base": 90, "cand": 10}, 2))  # older, read late from the topic
    assert log.router.routes["support"] == {"base": 50, "cand": 50}


def test_the_same_event_twice_is_harmless_and_no_weights_removes_the_route():
    log = RouteLog(Router("base", {}))
    event = change("support", {"cand": 100}, 1)
    assert log.apply(event) and log.apply(event)
    assert log.apply(change("support", {}, 2))
    assert "support" not in log.router.routes


def test_events_that_do_not_change_a_route_are_ignored():
    log = RouteLog(Router("base", {"keep": {"base": 1}}))
    assert not log.apply(change("", {"cand": 100}, 1))
    assert not log.apply(change("support", {"cand": 100}, 1, status="started"))
    assert not log.apply(change("support", {"cand": 100}, 1, status="failed"))
    assert not log.apply(change("support", {"cand": 100}, 1, base_model="another-model"))
    assert not log.apply(change("support", {"cand": float("inf")}, 1))  # invalid: logged, not applied
    assert dict(log.router.routes) == {"keep": {"base": 1}}


def test_rows_from_the_table_become_route_events():
    events = events_from_rows("base", [("support", {"base": 90, "cand": 10}, 1_767_225_600_500)])
    log = RouteLog(Router("base", {}))
    assert log.apply(events[0])
    assert log.router.routes["support"] == {"base": 90.0, "cand": 10.0}
    assert not log.apply(change("support", {"base": 100}, 0))  # before the stored change


def test_the_rebuild_query_quotes_the_model_name():
    assert "base_model = 'it\\'s'" in current_routes_sql("it's")

"""Deployment events stored, and the routes a starting gateway rebuilds from them (the real chdb store)."""

import asyncio
from datetime import UTC, datetime, timedelta

from schemas.events import DeploymentEvent
from serving.gateway.route_events import RouteLog, current_routes_sql, events_from_rows
from serving.gateway.routing import Router
from streams.store.runner import StoreRunner
from streams.store.sql import run_query
from streams.store.writer import ClickHouseWriter

T0 = datetime.now(UTC) - timedelta(hours=1)  # inside the retention


def test_the_latest_succeeded_change_per_route_is_rebuilt(store: StoreRunner) -> None:
    base = "rebuild-test-model"
    writer = ClickHouseWriter(store, max_rows=100, max_backoff_seconds=1)

    def event(route: str, weights: dict[str, float], seconds: int, status: str = "succeeded") -> DeploymentEvent:
        return DeploymentEvent(deployment_id="d1", base_model=base, action="canary", status=status, route=route,
                               weights=weights, timestamp=T0 + timedelta(seconds=seconds), actor="deployer",
                               numbers={"canary.requests": 30})

    events = [event("support", {base: 90, "cand": 10}, 1), event("support", {base: 50, "cand": 50}, 2),
              event("support", {"cand": 100}, 3, status="failed"), event("old", {"x": 1}, 1), event("old", {}, 2),
              event("other", {base: 1}, 5)]
    assert asyncio.run(writer.write(events)) == []
    result = asyncio.run(store.call(run_query, current_routes_sql(base)))
    log = RouteLog(Router(base, {}))
    for rebuilt in events_from_rows(base, result.rows):
        log.apply(rebuilt)
    assert dict(log.router.routes) == {"support": {base: 50.0, "cand": 50.0}, "other": {base: 1.0}}

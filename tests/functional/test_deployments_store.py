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


def test_a_rollout_and_its_interval_points_read_back_from_the_store_as_the_deployer_reads_them(
        store: StoreRunner) -> None:
    from schemas.events import MetricPoint, ModelCandidateEvent
    from serving.deployer import rollout
    from serving.deployer.process import event_from_row, millis
    from streams.store.deployments import interval_points_sql, latest_rollout_sql

    base = "rollout-store-model"
    t0 = T0.replace(microsecond=T0.microsecond // 1000 * 1000)  # the store keeps milliseconds
    writer = ClickHouseWriter(store, max_rows=100, max_backoff_seconds=1)
    candidate = ModelCandidateEvent(run_id="r1", base_model=base, adapter_name="cand-1", adapter_uri="/a/cand-1",
                                    passed_gate=True)
    policy = rollout.Policy(steps=(10, 50, 100))
    begun = rollout.begin(candidate, "stable-1", t0)
    assert begun.state is not None
    canary = rollout.loaded(begun.state, policy, t0 + timedelta(seconds=1))
    paused = DeploymentEvent(deployment_id="dep-cand-1", base_model=base, action="pause", status="succeeded",
                             actor="cli", timestamp=t0 + timedelta(seconds=2))
    published = [*begun.events, *canary.events, paused]
    older = DeploymentEvent(deployment_id="dep-older", base_model=base, action="load", status="started",
                            adapter_name="older", actor="deployer", timestamp=t0 - timedelta(minutes=5))
    late = DeploymentEvent(deployment_id="dep-older", base_model=base, action="unload", status="succeeded",
                           adapter_name="older", actor="deployer", timestamp=t0 + timedelta(seconds=3))
    assert asyncio.run(writer.write([older, *published, late])) == []  # the older one's unload came last

    rows = asyncio.run(store.call(run_query, latest_rollout_sql(base)))
    events = [event_from_row(dict(zip(rows.columns, row, strict=True))) for row in rows.rows]
    assert events == published
    state = rollout.fold_all(events)
    assert state is not None and (state.deployment_id, state.phase, state.step, state.paused) == (
        "dep-cand-1", "canary", 0, True)

    def point(name: str, value: float, adapter: str, seconds: int, **labels: str) -> MetricPoint:
        return MetricPoint(name=name, value=value, window_start=t0 + timedelta(seconds=seconds), window_seconds=10,
                           model=base, adapter=adapter, labels=labels)

    points = [point("requests", 7, "cand-1", 10), point("requests", 5, "cand-1", 20), point("requests", 9, "", 10),
              point("requests", 3, "cand-1", 0),  # before the interval
              point("requests", 4, "cand-1", 30),  # after it
              point("requests", 2, "cand-1", 10, cohort="pro"),  # a breakdown
              point("requests", 8, "stable-1", 10)]
    assert asyncio.run(writer.write(points)) == []
    sql = interval_points_sql(base, ["cand-1", "stable-1"], 10, millis(t0 + timedelta(seconds=10)),
                              millis(t0 + timedelta(seconds=30)))
    found = asyncio.run(store.call(run_query, sql))
    assert sorted((row[3], row[1]) for row in found.rows) == [("cand-1", 5.0), ("cand-1", 7.0), ("stable-1", 8.0)]

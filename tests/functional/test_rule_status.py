"""Where each rule's series stand (`llmwatch rules list` and the Alerts page), read from a real store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from llmwatch.rule_status import rule_series
from processors.alerting.evaluation import series_fingerprint, series_key
from schemas.events import MetricPoint, SeriesState, SilenceEvent
from schemas.rules import AlertRule
from streams.store.runner import StoreRunner
from streams.store.sql import QueryResult, run_query
from streams.store.writer import ClickHouseWriter

NOW = datetime.now(UTC).replace(microsecond=0)


def test_series_show_their_stored_state_latest_value_and_silence(store: StoreRunner) -> None:
    def read(sql: str, parameters: Mapping[str, Any]) -> QueryResult:
        return asyncio.run(store.call_in_own_session(run_query, sql, parameters))

    rule = AlertRule(name="status_p99", metric="status_latency_p99_ms", window_seconds=60, threshold=1000)
    quiet = AlertRule(name="status_quiet", metric="status_nothing", threshold=1)
    points = [MetricPoint(name="status_latency_p99_ms", value=v, window_start=NOW - timedelta(minutes=m),
                          window_seconds=60, model=model) for model, m, v in
              [("hot", 3, 900.0), ("hot", 2, 1500.0), ("cold", 2, 100.0)]]
    hot = points[1]
    state = SeriesState(event_id=uuid.uuid4(), fingerprint=series_fingerprint(rule.name, series_key(hot)),
                        rule=rule.name, metric=rule.metric,
                        series={"model": "hot", "adapter": "", "prompt_version": ""}, status="firing",
                        value=1500.0, firing_since=NOW - timedelta(minutes=1))
    silence = SilenceEvent(silence_id="s-status", rule="status_*", matchers={"model": "hot"}, starts_at=NOW,
                           ends_at=NOW + timedelta(hours=1))
    writer = ClickHouseWriter(store, max_rows=100, max_backoff_seconds=1)
    for batch in (points, [state], [silence]):
        assert asyncio.run(writer.write(batch)) == []  # type: ignore[arg-type]
    rows = {(r.rule, r.series.get("model")): r for r in rule_series(read, [rule, quiet], NOW + timedelta(seconds=1))}
    firing = rows[("status_p99", "hot")]
    assert (firing.state, firing.value, firing.silenced) == ("firing", 1500.0, True)
    assert firing.since == NOW - timedelta(minutes=1) and firing.condition == "> 1000"
    calm = rows[("status_p99", "cold")]
    assert (calm.state, calm.value, calm.silenced) == ("ok", 100.0, False)
    assert rows[("status_quiet", None)].state == "no data in the last day"

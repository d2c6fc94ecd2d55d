"""Where each alert rule's series stand: what `llmwatch rules list` prints and the dashboard's Alerts page shows.

A series is every (model, adapter, prompt version, labels) of a rule's metric seen in the last day; its
state is the one the worker stored (`alert_state`), ok if it never left ok, and `silenced` when a silence
in force matches it. Three reads whatever the number of rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from processors.alerting import DEFAULT_RULES
from processors.alerting.evaluation import filters, selects, series_fingerprint, series_key, silenced
from schemas.events import MetricPoint, SeriesState, SilenceEvent
from schemas.rules import AlertRule
from streams.settings import Settings
from streams.store.sql import QueryResult

Read = Callable[[str, Mapping[str, Any]], QueryResult]

STATES_SQL = "SELECT * EXCEPT ingested_at FROM alert_state"
SILENCES_SQL = "SELECT * EXCEPT ingested_at FROM silences WHERE ends_at > {now:DateTime64(3, 'UTC')}"
LATEST_SQL = """
SELECT name, window_seconds, model, adapter, prompt_version, labels,
       argMax(value, window_start) AS value, max(window_start) AS last_start
FROM metric_points
WHERE name IN {names:Array(String)} AND window_start > {now:DateTime64(3, 'UTC')} - INTERVAL 1 DAY
GROUP BY name, window_seconds, model, adapter, prompt_version, labels
"""


def rules_path(settings: Settings, file: Path | None = None) -> Path:
    return file or settings.alerts.rules_file or DEFAULT_RULES


@dataclass(frozen=True)
class SeriesRow:
    rule: str
    metric: str
    condition: str
    series: dict[str, str]
    state: str
    silenced: bool
    value: float | None
    window_start: datetime | None
    since: datetime | None


def condition(rule: AlertRule) -> str:
    return f"{rule.op} {rule.threshold:g}" + (f" (warn {rule.warning:g})" if rule.warning is not None else "")


_NAIVE_TIME = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?$")


def _utc(value: Any) -> Any:
    """Times come back without their zone (aggregates, Nullable columns, text through the worker); all are UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if isinstance(value, str) and _NAIVE_TIME.match(value):
        return value + "+00:00"
    return value


def _records(read: Read, sql: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    result = read(sql, parameters)
    return [{c: _utc(v) for c, v in zip(result.columns, row, strict=True)} for row in result.rows]


def rule_series(read: Read, rules: list[AlertRule], now: datetime) -> list[SeriesRow]:
    """Every rule, each series it selects (or one row saying it saw no data in the last day)."""
    states = {s.fingerprint: s for s in (SeriesState.model_validate(r) for r in _records(read, STATES_SQL, {}))}
    silences = [SilenceEvent.model_validate(r) for r in _records(read, SILENCES_SQL, {"now": now})]
    names = sorted({rule.metric for rule in rules})
    latest = [MetricPoint.model_validate({**r, "window_start": r["last_start"]})
              for r in _records(read, LATEST_SQL, {"names": names, "now": now})]
    rows = []
    for rule in rules:
        shown = sorted((p for p in latest if p.name == rule.metric and p.window_seconds == rule.window_seconds
                        and selects(filters(rule), series_key(p))), key=series_key)
        if not shown:
            rows.append(SeriesRow(rule.name, rule.metric, condition(rule), {}, "no data in the last day", False,
                                  None, None, None))
        for point in shown:
            state = states.get(series_fingerprint(rule.name, series_key(point)))
            labels = state.series if state else {"model": point.model, "adapter": point.adapter,
                                                 "prompt_version": point.prompt_version, **point.labels}
            status = state.status if state else "ok"
            since = (state.firing_since if status == "firing" else state.pending_since) if state else None
            rows.append(SeriesRow(rule.name, rule.metric, condition(rule), labels, status,
                                  silenced(silences, rule.name, labels, now), point.value, point.window_start, since))
    return rows

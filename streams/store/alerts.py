"""Reads for alerting: series state after a restart, active silences, the requests behind a breach, history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.events import MetricPoint, SeriesState, SilenceEvent
from streams.store.client import READ_SETTINGS
from streams.store.runner import Store

WORST_FIRST = {
    "latency": "latency_ms DESC",
    "ttft": "ttft_ms DESC",
    "tox": "greatest(prompt_toxicity, ifNull(response_toxicity, 0)) DESC",
    "error": "status = 'ok', latency_ms DESC",
    "refusal": "refusal DESC, latency_ms DESC",
}
"""Which requests stand behind a breach of a metric, by the metric name's first word (`latency_p99_ms`...)."""


def _utc(value: Any) -> Any:
    """Nullable DateTime64 columns come back without their zone; every llmwatch time is UTC."""
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


def _records(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=parameters or {}, settings=READ_SETTINGS)
    return [{name: _utc(value) for name, value in zip(result.column_names, row, strict=True)}
            for row in result.result_rows]


def _fields(model: type, record: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name in model.model_fields}  # type: ignore[attr-defined]


def fetch_series(client: Client) -> list[SeriesState]:
    return [SeriesState.model_validate(_fields(SeriesState, r)) for r in _records(client, "SELECT * FROM alert_state")]


def fetch_silences(client: Client, now: datetime) -> list[SilenceEvent]:
    rows = _records(client, "SELECT * FROM silences WHERE ends_at > {now:DateTime64(3, 'UTC')}", {"now": now})
    return [SilenceEvent.model_validate(_fields(SilenceEvent, r)) for r in rows]


def fetch_worst_requests(client: Client, metric: str, series: dict[str, str], start: datetime, end: datetime,
                         limit: int) -> list[str]:
    order = next((o for prefix, o in WORST_FIRST.items() if metric.startswith(prefix) or f".{prefix}" in metric),
                 None)
    if order is None:
        return []
    rows = client.query(
        "SELECT request_id FROM inference_events WHERE timestamp >= {start:DateTime64(3, 'UTC')} "
        "AND timestamp < {end:DateTime64(3, 'UTC')} AND model = {model:String} "
        "AND ifNull(adapter, '') = {adapter:String} AND ifNull(prompt_template_version, '') = {pv:String} "
        f"ORDER BY {order} LIMIT {int(limit)}",
        parameters={"start": start, "end": end, "model": series.get("model", ""),
                    "adapter": series.get("adapter", ""), "pv": series.get("prompt_version", "")},
        settings=READ_SETTINGS).result_rows
    return [str(row[0]) for row in rows]


def fetch_points(client: Client, since: datetime, until: datetime, names: list[str]) -> list[MetricPoint]:
    """Stored metric points in a period, oldest window first: what `llmwatch rules backtest` replays."""
    rows = _records(client, "SELECT * FROM metric_points WHERE window_start >= {since:DateTime64(3, 'UTC')} "
                            "AND window_start < {until:DateTime64(3, 'UTC')} AND name IN {names:Array(String)} "
                            "ORDER BY window_start, name", {"since": since, "until": until, "names": names})
    return [MetricPoint.model_validate(_fields(MetricPoint, r)) for r in rows]


class StoreAlertReader:
    """`processors.ports.AlertStore` over the store thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def series(self) -> list[SeriesState]:
        return await self.store.call(fetch_series)

    async def silences(self, now: datetime) -> list[SilenceEvent]:
        return await self.store.call(fetch_silences, now)

    async def worst_requests(self, metric: str, series: dict[str, str], start: datetime, end: datetime,
                             limit: int = 5) -> list[str]:
        return await self.store.call(fetch_worst_requests, metric, series, start, end, limit)

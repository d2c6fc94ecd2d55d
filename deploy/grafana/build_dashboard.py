"""Writes deploy/grafana/dashboards/llmwatch-overview.json: the built-in Overview's panels for Grafana.

The ClickHouse panels run the dashboard's own SQL (llmwatch/dashboard/queries.py) with Grafana's macros in
place of its bound parameters, so the two never disagree; a test rebuilds the file and compares.

    python deploy/grafana/build_dashboard.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmwatch.dashboard import queries  # noqa: E402

OUT = Path(__file__).parent / "dashboards" / "llmwatch-overview.json"
CLICKHOUSE = {"type": "grafana-clickhouse-datasource", "uid": "llmwatch-clickhouse"}
PROMETHEUS = {"type": "prometheus", "uid": "llmwatch-prometheus"}
SERIES = "concat(model, if(adapter = '', '', concat('/', adapter)))"

WINDOWS = queries.SERIES_SQL.split("FROM (", 1)[1].rsplit(")\nGROUP BY t", 1)[0]
"""The per-window, per-series pivot the Overview reads (from `overview_windows`), with Grafana's time filter."""
PIVOT = ("(" + WINDOWS.replace("{window:UInt32}", "${window}")
         .replace("window_start >= now64(3) - toIntervalSecond({range:UInt32})", "$__timeFilter(window_start)") + ")")
RANGE_SECONDS = "(${__to:date:seconds} - ${__from:date:seconds})"


def clickhouse(sql: str, ref: str = "A", table: bool = False) -> dict[str, Any]:
    return {"refId": ref, "datasource": CLICKHOUSE, "editorType": "sql", "rawSql": sql.strip(),
            "format": 1 if table else 0, "queryType": "table" if table else "timeseries"}


def weighted(expression: str, weight: str = "n") -> str:
    return f"sum({expression} * {weight}) / nullIf(sumIf({weight}, {expression} IS NOT NULL), 0)"


def timeseries(expression: str, suffix: str = "") -> str:
    label = f"concat({SERIES}, '{suffix}')" if suffix else SERIES
    return (f"SELECT $__timeInterval(window_start) AS time, {label} AS series, {expression} AS value\n"
            f"FROM {PIVOT}\nGROUP BY time, series ORDER BY time")


def panel(title: str, targets: list[dict[str, Any]], x: int, y: int, *, unit: str = "short", w: int = 8,
          h: int = 8, kind: str = "timeseries", datasource: dict[str, str] = CLICKHOUSE) -> dict[str, Any]:
    return {"type": kind, "title": title, "datasource": datasource, "targets": targets,
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}}


def build() -> dict[str, Any]:
    firing = queries.FIRING_SQL.replace("SELECT * FROM alerts\n", "SELECT * FROM alerts FINAL\n")
    summary = (f"SELECT model, adapter, sum(n) AS requests, sum(n) / {RANGE_SECONDS} AS req_per_s,\n"
               f"       {weighted('p50')} AS p50_ms, {weighted('p95')} AS p95_ms, {weighted('p99')} AS p99_ms,\n"
               f"       {weighted('ttft50')} AS ttft_p50_ms, {weighted('err')} AS error_rate,\n"
               f"       {weighted('tox')} AS toxic_rate, {weighted('down', 'fb')} AS thumbs_down_rate,\n"
               f"       {weighted('rouge', 'fb')} AS rouge_l, max(gap) AS largest_bias_gap\n"
               f"FROM {PIVOT}\nGROUP BY model, adapter ORDER BY model, adapter")
    drift = ("SELECT $__timeInterval(window_start) AS time, labels['feature'] AS series, max(value) AS value\n"
             "FROM metric_points FINAL WHERE name = 'drift.score' AND window_seconds = ${window} "
             "AND $__timeFilter(window_start)\nGROUP BY time, series ORDER BY time")
    panels = [
        panel("Firing now", [clickhouse(firing, table=True)], 0, 0, w=24, h=6, kind="table"),
        panel("Per model and adapter (rates exact; percentiles: request-weighted mean of windows)",
              [clickhouse(summary, table=True)], 0, 6, w=24, h=7, kind="table"),
        panel("Requests per second", [clickhouse(timeseries("sum(n) / $__interval_s"))], 0, 13, unit="reqps"),
        panel("Latency p50 / p95 / p99", [clickhouse(timeseries(weighted(p), f" {p}"), ref) for ref, p in
                                          (("A", "p50"), ("B", "p95"), ("C", "p99"))], 8, 13, unit="ms"),
        panel("Time to first token p50 / p95", [clickhouse(timeseries(weighted(p), f" {p[4:]}"), ref) for ref, p in
                                                (("A", "ttft50"), ("B", "ttft95"))], 16, 13, unit="ms"),
        panel("Error rate", [clickhouse(timeseries(weighted("err")))], 0, 21, unit="percentunit"),
        panel("Toxic rate", [clickhouse(timeseries(weighted("tox")))], 8, 21, unit="percentunit"),
        panel("Thumbs-down rate", [clickhouse(timeseries(weighted("down", "fb")))], 16, 21, unit="percentunit"),
        panel("ROUGE-L of answers against corrections", [clickhouse(timeseries(weighted("rouge", "fb")))], 0, 29),
        panel("Drift score per feature (all models)", [clickhouse(drift)], 8, 29),
        panel("Largest bias gap", [clickhouse(timeseries("max(gap)"))], 16, 29),
        panel("Worker: events stored / dead-lettered per second",
              [{"refId": "A", "datasource": PROMETHEUS, "legendFormat": "stored {{topic}}",
                "expr": "sum by (topic) (rate(llmwatch_worker_events_stored_total[5m]))"},
               {"refId": "B", "datasource": PROMETHEUS, "legendFormat": "dead-lettered {{topic}} {{reason}}",
                "expr": "sum by (topic, reason) (rate(llmwatch_worker_events_dead_lettered_total[5m]))"}],
              0, 37, unit="ops", datasource=PROMETHEUS),
        panel("Worker: consumer lag", [{"refId": "A", "datasource": PROMETHEUS, "legendFormat": "{{topic}}",
                                        "expr": "sum by (topic) (llmwatch_worker_consumer_lag)"}],
              8, 37, datasource=PROMETHEUS),
        panel("Worker: store insert p99", [{"refId": "A", "datasource": PROMETHEUS, "legendFormat": "{{table}}",
                                            "expr": "histogram_quantile(0.99, sum by (le, table) "
                                                    "(rate(llmwatch_worker_store_insert_seconds_bucket[5m])))"}],
              16, 37, unit="s", datasource=PROMETHEUS),
        panel("Gateway: requests per second", [{"refId": "A", "datasource": PROMETHEUS,
                                                "legendFormat": "{{model}} {{adapter}} {{status}}",
                                                "expr": "sum by (model, adapter, status) "
                                                        "(rate(llmwatch_gateway_requests_total[5m]))"}],
              0, 45, w=12, unit="reqps", datasource=PROMETHEUS),
        panel("Worker: alert series by state", [{"refId": "A", "datasource": PROMETHEUS,
                                                 "legendFormat": "{{state}}",
                                                 "expr": "sum by (state) (llmwatch_worker_alert_series)"}],
              12, 45, w=12, datasource=PROMETHEUS),
    ]
    for number, item in enumerate(panels, start=1):
        item["id"] = number
    return {
        "uid": "llmwatch-overview",
        "title": "llmwatch overview",
        "tags": ["llmwatch"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "window", "label": "window (s)", "type": "custom", "query": "10,60",
            "current": {"text": "60", "value": "60"},
            "options": [{"text": "10", "value": "10", "selected": False},
                        {"text": "60", "value": "60", "selected": True}],
        }]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(OUT)

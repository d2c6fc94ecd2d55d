"""Plotly figures (plain dicts, drawn by the plotly.js the app serves) from the rows the page queries read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

Row = Mapping[str, Any]


def utc_text(value: Any) -> str:
    """A time as plotly reads it, in UTC: rows come as datetimes (a server) or text (through the worker)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)[:19]


def series_name(row: Row) -> str:
    return f"{row['model']}/{row['adapter']}" if row.get("adapter") else str(row["model"])


def figure(chart_id: str, title: str, traces: list[dict[str, Any]], unit: str = "") -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "font": {"size": 14}},
        "height": 280,
        "margin": {"l": 50, "r": 10, "t": 36, "b": 40},
        "xaxis": {"type": "date", "automargin": True},
        "yaxis": {"title": {"text": unit}, "rangemode": "tozero", "automargin": True},
        "legend": {"orientation": "h", "y": -0.25},
        "showlegend": True,
    }
    if not traces:
        layout["xaxis"]["visible"] = layout["yaxis"]["visible"] = False
        layout["annotations"] = [{"text": "no points in this range", "showarrow": False, "font": {"color": "#6b7280"}}]
    return {"id": chart_id, "data": traces, "layout": layout}


def lines(rows: Sequence[Row], column: str, *, group: str | None = None, suffix: str = "",
          dash: str = "solid") -> list[dict[str, Any]]:
    """One trace per series (model/adapter, or the `group` column), points where the value exists."""
    traces: dict[str, dict[str, Any]] = {}
    for row in rows:
        value = row.get(column)
        if value is None:
            continue
        name = (str(row[group]) if group else series_name(row)) + suffix
        trace = traces.setdefault(name, {"type": "scatter", "mode": "lines+markers", "name": name, "x": [], "y": [],
                                         "line": {"dash": dash}, "marker": {"size": 4}})
        trace["x"].append(utc_text(row["t"]))
        trace["y"].append(value)
    return list(traces.values())


def overview_figures(series: Sequence[Row], drift: Sequence[Row]) -> list[dict[str, Any]]:
    latency = (lines(series, "latency_p50_ms", suffix=" p50", dash="dot")
               + lines(series, "latency_p95_ms", suffix=" p95", dash="dash")
               + lines(series, "latency_p99_ms", suffix=" p99"))
    ttft = lines(series, "ttft_p50_ms", suffix=" p50", dash="dot") + lines(series, "ttft_p95_ms", suffix=" p95")
    return [
        figure("requests", "Requests per second", lines(series, "requests_per_second"), "req/s"),
        figure("latency", "Latency p50 / p95 / p99", latency, "ms"),
        figure("ttft", "Time to first token p50 / p95", ttft, "ms"),
        figure("errors", "Error rate", lines(series, "error_rate"), "share"),
        figure("toxicity", "Toxic rate", lines(series, "toxic_rate"), "share"),
        figure("thumbs", "Thumbs-down rate", lines(series, "thumbs_down_rate"), "share"),
        figure("rouge", "ROUGE-L of answers against corrections", lines(series, "correction_rouge_l"), "F1"),
        figure("drift", "Drift score per feature (all models)", lines(drift, "score", group="feature"), "score"),
        figure("bias", "Largest bias gap", lines(series, "bias_gap"), "gap"),
    ]


def dead_letter_figure(counts: Sequence[Row]) -> dict[str, Any]:
    bars: dict[str, dict[str, Any]] = {}
    for row in counts:
        bar = bars.setdefault(row["reason"], {"type": "bar", "name": row["reason"], "x": [], "y": []})
        bar["x"].append(utc_text(row["t"]))
        bar["y"].append(row["letters"])
    chart = figure("dead_letters", "Dead letters by reason", list(bars.values()), "messages")
    chart["layout"]["barmode"] = "stack"
    return chart


def canary_figure(deployments: Sequence[Row]) -> dict[str, Any] | None:
    """Traffic share of each adapter over time, when the deployments table says it."""
    rows = [r for r in deployments if "traffic_percent" in r and "timestamp" in r]
    if not rows:
        return None
    steps: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: utc_text(r["timestamp"])):
        name = str(row.get("adapter_name") or row.get("base_model") or "base")
        step = steps.setdefault(name, {"type": "scatter", "mode": "lines+markers", "name": name, "x": [], "y": [],
                                       "line": {"shape": "hv"}})
        step["x"].append(utc_text(row["timestamp"]))
        step["y"].append(row["traffic_percent"])
    return figure("canary", "Traffic per adapter (deployments)", list(steps.values()), "%")

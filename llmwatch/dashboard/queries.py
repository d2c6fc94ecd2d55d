"""What each page reads: fixed SQL with `{name:Type}` placeholders that ClickHouse binds, never text from a user.

The Overview reads the metric points the window job computed from deduplicated rows (the numbers the alert
rules judge), not the raw events: a window's point is a handful of rows whatever the traffic, so a chart of
a day costs the same at ten requests a second or a thousand. Rates over several windows are weighted by the
requests (or feedback) behind each, which gives the exact rate over the span; percentiles cannot be merged
that way, so a bucket's percentile is the request-weighted mean of its windows' percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.store.sql import QueryResult

Read = Callable[[str, Mapping[str, Any]], QueryResult]
"""Runs read-only SQL with bound parameters: `streams.store.sql.query`, the path of `llmwatch sql`."""

RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
DEFAULT_RANGE = "1h"
POINTS = 240
"""About this many buckets per chart, whatever the range."""


def records(read: Read, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    result = read(sql, parameters or {})
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


@dataclass(frozen=True)
class Span:
    """A chosen range, the window length whose points are read, and the chart's bucket (a multiple of it)."""

    name: str
    seconds: int
    window: int
    bucket: int

    @property
    def parameters(self) -> dict[str, int]:
        return {"range": self.seconds, "window": self.window, "bucket": self.bucket}


def span(name: str, windows: Sequence[int]) -> Span:
    """The largest computed window that still gives about `POINTS` buckets (else the smallest one)."""
    seconds = RANGES.get(name, RANGES[DEFAULT_RANGE])
    name = name if name in RANGES else DEFAULT_RANGE
    wanted = seconds / POINTS
    fitting = [w for w in windows if w <= wanted]
    window = max(fitting) if fitting else min(windows)
    return Span(name, seconds, window, window * max(1, math.ceil(wanted / window)))


SERIES_SQL = """
SELECT toStartOfInterval(window_start, toIntervalSecond({bucket:UInt32})) AS t, model, adapter,
       sum(n) AS requests,
       sum(n) / {bucket:UInt32} AS requests_per_second,
       sum(err * n) / nullIf(sumIf(n, err IS NOT NULL), 0) AS error_rate,
       sum(tox * n) / nullIf(sumIf(n, tox IS NOT NULL), 0) AS toxic_rate,
       sum(p50 * n) / nullIf(sumIf(n, p50 IS NOT NULL), 0) AS latency_p50_ms,
       sum(p95 * n) / nullIf(sumIf(n, p95 IS NOT NULL), 0) AS latency_p95_ms,
       sum(p99 * n) / nullIf(sumIf(n, p99 IS NOT NULL), 0) AS latency_p99_ms,
       sum(ttft50 * n) / nullIf(sumIf(n, ttft50 IS NOT NULL), 0) AS ttft_p50_ms,
       sum(ttft95 * n) / nullIf(sumIf(n, ttft95 IS NOT NULL), 0) AS ttft_p95_ms,
       sum(fb) AS feedback,
       sum(down * fb) / nullIf(sumIf(fb, down IS NOT NULL), 0) AS thumbs_down_rate,
       sum(rouge * fb) / nullIf(sumIf(fb, rouge IS NOT NULL), 0) AS correction_rouge_l,
       max(gap) AS bias_gap
FROM (
    SELECT window_start, model, adapter, prompt_version,
           finalizeAggregation(requests) AS n_, if(isNaN(n_), 0, n_) AS n,
           finalizeAggregation(error_rate) AS err_, if(isNaN(err_), NULL, err_) AS err,
           finalizeAggregation(toxic_rate) AS tox_, if(isNaN(tox_), NULL, tox_) AS tox,
           finalizeAggregation(latency_p50_ms) AS p50_, if(isNaN(p50_), NULL, p50_) AS p50,
           finalizeAggregation(latency_p95_ms) AS p95_, if(isNaN(p95_), NULL, p95_) AS p95,
           finalizeAggregation(latency_p99_ms) AS p99_, if(isNaN(p99_), NULL, p99_) AS p99,
           finalizeAggregation(ttft_p50_ms) AS ttft50_, if(isNaN(ttft50_), NULL, ttft50_) AS ttft50,
           finalizeAggregation(ttft_p95_ms) AS ttft95_, if(isNaN(ttft95_), NULL, ttft95_) AS ttft95,
           finalizeAggregation(feedback_count) AS fb_, if(isNaN(fb_), 0, fb_) AS fb,
           finalizeAggregation(thumbs_down_rate) AS down_, if(isNaN(down_), NULL, down_) AS down,
           finalizeAggregation(correction_rouge_l_mean) AS rouge_, if(isNaN(rouge_), NULL, rouge_) AS rouge,
           finalizeAggregation(bias_gap) AS gap_, if(isNaN(gap_), NULL, gap_) AS gap
    FROM overview_windows FINAL
    WHERE window_seconds = {window:UInt32} AND window_start >= now64(3) - toIntervalSecond({range:UInt32})
)
GROUP BY t, model, adapter
ORDER BY t, model, adapter
"""
"""`overview_windows` (migration 0009_dashboard): the metric points pivoted per window and series as they are
stored. FINAL merges the states of a window's rows where parts overlap and reads merged parts as they are,
which costs far less than merging every row's states in a GROUP BY."""

DRIFT_SQL = """
SELECT toStartOfInterval(window_start, toIntervalSecond({bucket:UInt32})) AS t, labels['feature'] AS feature,
       max(value) AS score
FROM metric_points
WHERE name = 'drift.score' AND window_seconds = {window:UInt32}
  AND window_start >= now64(3) - toIntervalSecond({range:UInt32})
GROUP BY t, feature
ORDER BY t, feature
"""

FIRING_SQL = """
SELECT rule, severity, model, adapter, prompt_version, metric, value, threshold, message, starts_at,
       timestamp AS judged_at, silenced, request_ids
FROM (
    SELECT * FROM alerts
    ORDER BY timestamp DESC
    LIMIT 1 BY rule, fingerprint, model, adapter, prompt_version
)
WHERE state = 'firing'
ORDER BY severity = 'critical' DESC, starts_at DESC
LIMIT 100
"""

RATES = [("error_rate", "requests"), ("toxic_rate", "requests"), ("latency_p50_ms", "requests"),
         ("latency_p95_ms", "requests"), ("latency_p99_ms", "requests"), ("ttft_p50_ms", "requests"),
         ("ttft_p95_ms", "requests"), ("thumbs_down_rate", "feedback"), ("correction_rouge_l", "feedback")]


def _key(row: Mapping[str, Any]) -> tuple[str, str]:
    return str(row["model"]), str(row["adapter"])


def summary(rows: Sequence[Mapping[str, Any]], seconds: int) -> list[dict[str, Any]]:
    """Per model and adapter over the whole range, from the chart's buckets (weighted as the buckets are)."""
    by_series: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        by_series.setdefault(_key(row), []).append(row)
    out = []
    for (model, adapter), series in sorted(by_series.items()):
        line: dict[str, Any] = {"model": model, "adapter": adapter,
                                "requests": sum(r["requests"] or 0 for r in series),
                                "feedback": sum(r["feedback"] or 0 for r in series)}
        line["requests_per_second"] = line["requests"] / seconds
        for column, weight in RATES:
            pairs = [(r[column], r[weight] or 0) for r in series if r[column] is not None]
            total = sum(w for _, w in pairs)
            line[column] = sum(v * w for v, w in pairs) / total if total else None
        gaps = [r["bias_gap"] for r in series if r["bias_gap"] is not None]
        line["bias_gap"] = max(gaps) if gaps else None
        out.append(line)
    return out


def overview(read: Read, chosen: Span) -> dict[str, Any]:
    rows = records(read, SERIES_SQL, chosen.parameters)
    return {
        "firing": records(read, FIRING_SQL),
        "series": rows,
        "summary": summary(rows, chosen.seconds),
        "drift": records(read, DRIFT_SQL, chosen.parameters),
    }


# --- Alerts ---

SILENCES_SQL = """
SELECT silence_id, rule, matchers, starts_at, ends_at, created_by, comment, ends_at > now64(3) AS in_force
FROM silences ORDER BY ends_at DESC LIMIT 100
"""

TIMELINE_SQL = """
SELECT timestamp, rule, state, severity, model, adapter, prompt_version, metric, value, threshold, message,
       fingerprint, starts_at, ends_at, silenced, request_ids
FROM alerts WHERE timestamp >= now64(3) - toIntervalSecond({range:UInt32})
ORDER BY timestamp DESC LIMIT 500
"""



# --- Requests ---

SEARCH_COLUMNS = {"request": "request_id", "user": "user_id", "session": "session_id"}

REQUEST_COLUMNS = """
request_id, timestamp, model, adapter, status, error, latency_ms, ttft_ms, prompt_tokens, completion_tokens,
user_id, session_id, cohort, language, prompt_template, prompt_template_version, prompt, messages,
response_text, prompt_toxicity, response_toxicity, toxic, refusal, sentiment, groups, redacted
"""

REQUESTS_SQL = {
    kind: f"SELECT {REQUEST_COLUMNS} FROM inference_events WHERE {column} = {{q:String}} "
          "ORDER BY timestamp DESC LIMIT 50"
    for kind, column in SEARCH_COLUMNS.items()
}

RECENT_REQUESTS_SQL = """
SELECT request_id, timestamp, model, adapter, status, latency_ms, user_id, session_id
FROM inference_events WHERE timestamp >= now64(3) - INTERVAL 1 HOUR
ORDER BY timestamp DESC LIMIT 20
"""

FEEDBACK_SQL = """
SELECT request_id, timestamp, thumbs, score, comment, correction, user_id
FROM feedback_events WHERE request_id IN {ids:Array(String)}
ORDER BY timestamp
"""


def find_requests(read: Read, kind: str, q: str) -> list[dict[str, Any]]:
    """Requests by id, user or session, newest first, each with its feedback (and corrections)."""
    found = records(read, REQUESTS_SQL[kind], {"q": q})
    if not found:
        return []
    feedback: dict[str, list[dict[str, Any]]] = {}
    for row in records(read, FEEDBACK_SQL, {"ids": sorted({r["request_id"] for r in found})}):
        feedback.setdefault(row["request_id"], []).append(row)
    for row in found:
        row["feedback"] = feedback.get(row["request_id"], [])
    return found


# --- Dead letters ---

DEAD_LETTER_COUNTS_SQL = """
SELECT toStartOfInterval(timestamp, toIntervalSecond({bucket:UInt32})) AS t, reason, count() AS letters
FROM dead_letters WHERE timestamp >= now64(3) - toIntervalSecond({range:UInt32})
GROUP BY t, reason ORDER BY t, reason
"""

DEAD_LETTERS_SQL = """
SELECT timestamp, origin_topic, origin_partition, origin_offset, reason, detail, base64Encode(raw) AS raw_base64,
       raw_size, truncated
FROM dead_letters WHERE timestamp >= now64(3) - toIntervalSecond({range:UInt32})
ORDER BY timestamp DESC LIMIT 50
"""

# --- Loop: tables the retraining and deployment work fill; read whatever columns they have ---

LOOP_TABLES = ("training_runs", "model_candidates", "deployments")
EXISTING_TABLES_SQL = ("SELECT name FROM system.tables WHERE database = currentDatabase() "
                       "AND name IN {names:Array(String)}")
LOOP_SQL = {table: f"SELECT * EXCEPT ingested_at FROM {table} ORDER BY timestamp DESC LIMIT 200"
            for table in LOOP_TABLES}

"""Reads for retraining: the rows a dataset is built from, the runs already made, the adapters serving.

The trainer is not the store's owner: with the embedded store every read goes through the worker's HTTP
(`sql.query(open_store=False)`), so values arrive as JSON (times as text). The dataset query's text goes into
each adapter's lineage, so it is built here as plain SQL with its values bound in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from clickhouse_connect.driver.binding import finalize_query

from schemas.events import TERMINAL_TRAINING_STATUSES
from streams.settings import Settings
from streams.store.sql import query

TRAINING_ROWS = """
SELECT i.request_id AS request_id, i.timestamp AS timestamp, i.model AS model, ifNull(i.adapter, '') AS adapter,
       i.prompt AS prompt, i.messages AS messages, i.response_text AS response_text,
       i.prompt_toxicity AS prompt_toxicity, i.toxic AS toxic, i.refusal AS refusal,
       i.user_id AS user_id, i.session_id AS session_id,
       f.thumbs_up AS thumbs_up, f.thumbs_down AS thumbs_down, f.max_score AS max_score,
       f.correction AS correction, f.feedback_user_id AS feedback_user_id
FROM inference_events AS i
INNER JOIN (
    SELECT request_id, countIf(thumbs = 'up') AS thumbs_up, countIf(thumbs = 'down') AS thumbs_down,
           max(score) AS max_score, argMaxIf(correction, timestamp, ifNull(correction, '') != '') AS correction,
           argMax(user_id, timestamp) AS feedback_user_id
    FROM feedback_events
    WHERE timestamp >= toDateTime64(%(since)s, 3, 'UTC')
    GROUP BY request_id
) AS f ON f.request_id = i.request_id
WHERE i.model = %(model)s AND i.status = 'ok' AND i.timestamp >= toDateTime64(%(since)s, 3, 'UTC')
ORDER BY i.timestamp DESC, i.request_id
LIMIT %(limit)s
""".strip()


def records(settings: Settings, sql: str) -> list[dict[str, Any]]:
    result = query(settings, sql, open_store=False)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def training_rows_sql(model: str, since: datetime, limit: int) -> str:
    """Inference events of `model` since `since` that have feedback, with the feedback folded per request."""
    return finalize_query(TRAINING_ROWS, {"model": model, "since": since.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                                          "limit": int(limit)})


def answered(settings: Settings, alert_id: UUID) -> bool:
    """Whether a run (of any outcome) has answered this alert already: an alert never trains twice."""
    sql = finalize_query("SELECT count() FROM training_runs WHERE trigger_alert_id = toUUID(%(id)s)",
                         {"id": str(alert_id)})
    return int(query(settings, sql, open_store=False).rows[0][0]) > 0


def unfinished_runs(settings: Settings) -> list[dict[str, Any]]:
    """Runs whose latest step is not an end: a trainer stopped (or crashed) during them."""
    ends = ", ".join(f"'{s}'" for s in sorted(TERMINAL_TRAINING_STATUSES))
    return records(settings, "SELECT run_id, argMax(status, timestamp) AS status, argMax(base_model, timestamp) "
                   "AS base_model, argMax(adapter, timestamp) AS adapter, argMax(trigger_alert_id, timestamp) AS "
                   f"trigger_alert_id FROM training_runs GROUP BY run_id HAVING status NOT IN ({ends})")


def serving_adapters(settings: Settings) -> set[str]:
    """Adapters whose latest deployment step put them in service (loaded, canaried or promoted)."""
    rows = records(settings, "SELECT adapter_name, argMax(action, timestamp) AS action, argMax(status, timestamp) "
                   "AS status FROM deployments WHERE adapter_name IS NOT NULL GROUP BY adapter_name")
    return {r["adapter_name"] for r in rows if r["action"] in ("load", "canary", "promote") and r["status"] != "failed"}


def candidates(settings: Settings, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    where = finalize_query("WHERE base_model = %(model)s", {"model": model}) if model else ""
    return records(settings, "SELECT timestamp, adapter_name, base_model, passed_gate, baseline, eval_metrics, "
                   f"baseline_metrics, gate_reason, adapter_uri, run_id FROM model_candidates {where} "
                   f"ORDER BY timestamp DESC LIMIT {int(limit)}")


def candidate(settings: Settings, name: str) -> dict[str, Any] | None:
    rows = records(settings, finalize_query(
        "SELECT adapter_uri, manifest_uri FROM model_candidates WHERE adapter_name = %(name)s "
        "ORDER BY timestamp DESC LIMIT 1", {"name": name}))
    return rows[0] if rows else None

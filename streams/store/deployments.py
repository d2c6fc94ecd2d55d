"""Reads for deployments: the history of route changes and what each adapter on a route came from.

Like the trainer, the CLI is not the store's owner: with the embedded store reads go through the worker.
"""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.binding import finalize_query

from streams.settings import Settings
from streams.store.sql import query

HISTORY = """
SELECT d.timestamp AS timestamp, d.deployment_id AS deployment_id, d.action AS action, d.status AS status,
       ifNull(d.adapter_name, '') AS adapter, d.route AS route, d.weights AS weights, d.actor AS actor,
       d.reason AS reason, c.run_id AS run_id, c.trigger_alert_id AS trigger_alert_id
FROM deployments AS d FINAL
LEFT JOIN (SELECT adapter_name, argMax(run_id, timestamp) AS run_id,
                  argMax(trigger_alert_id, timestamp) AS trigger_alert_id
           FROM model_candidates GROUP BY adapter_name) AS c ON c.adapter_name = ifNull(d.adapter_name, '')
WHERE d.base_model = %(model)s
ORDER BY d.timestamp DESC, d.event_id
LIMIT %(limit)s
""".strip()


def history(settings: Settings, base_model: str, limit: int) -> list[dict[str, Any]]:
    """Newest first, each with the adapter's training run and the alert that started it, where known."""
    result = query(settings, finalize_query(HISTORY, {"model": base_model, "limit": int(limit)}), open_store=False)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


EVENT_COLUMNS = """
toString(event_id) AS event_id, toUnixTimestamp64Milli(timestamp) AS millis, deployment_id, base_model,
adapter_name, action, status, traffic_percent, reason, route, weights, stable_adapter, actor, run_id,
toString(trigger_alert_id) AS trigger_alert_id, numbers
""".strip()


def _records(settings: Settings, sql: str) -> list[dict[str, Any]]:
    result = query(settings, sql, open_store=False)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def latest_rollout_sql(base_model: str) -> str:
    return finalize_query(
        f"SELECT {EVENT_COLUMNS} FROM deployments FINAL WHERE deployment_id = (SELECT argMax(deployment_id, "
        "timestamp) FROM deployments WHERE base_model = %(model)s AND actor = 'deployer' AND action = 'load' "
        "AND status = 'started') "
        "ORDER BY timestamp, event_id", {"model": base_model})


def latest_rollout(settings: Settings, base_model: str) -> list[dict[str, Any]]:
    """Every event (the deployer's and people's) of the deployer's newest deployment for `base_model`, in order.

    Newest by its start: an older one may still record an unload after a newer one began."""
    return _records(settings, latest_rollout_sql(base_model))


def decisions(settings: Settings, deployment_id: str) -> list[dict[str, Any]]:
    """Approvals, pauses and rollbacks people gave a deployment (`llmwatch deploy approve|pause|rollback`)."""
    sql = finalize_query(
        f"SELECT {EVENT_COLUMNS} FROM deployments FINAL WHERE deployment_id = %(id)s AND actor != 'deployer' "
        "AND action IN ('approve', 'pause', 'rollback') ORDER BY timestamp, event_id", {"id": deployment_id})
    return _records(settings, sql)


def deployed(settings: Settings, deployment_id: str) -> bool:
    sql = finalize_query("SELECT count() FROM deployments WHERE deployment_id = %(id)s", {"id": deployment_id})
    return int(query(settings, sql, open_store=False).rows[0][0]) > 0


def interval_points_sql(model: str, adapters: list[str], window_seconds: int, since_ms: int, until_ms: int) -> str:
    return finalize_query(
        "SELECT name, value, toUnixTimestamp64Milli(window_start) AS start_ms, adapter FROM metric_points FINAL "
        "WHERE model = %(model)s AND adapter IN %(adapters)s AND window_seconds = %(window)s AND empty(labels) "
        "AND window_start >= fromUnixTimestamp64Milli(toInt64(%(since)s), 'UTC') "
        "AND window_start < fromUnixTimestamp64Milli(toInt64(%(until)s), 'UTC')",
        {"model": model, "adapters": adapters, "window": int(window_seconds), "since": int(since_ms),
         "until": int(until_ms)})


def interval_points(settings: Settings, model: str, adapters: list[str], window_seconds: int, since_ms: int,
                    until_ms: int) -> list[dict[str, Any]]:
    """The unlabelled metric points of these adapters from windows that began in [since, until)."""
    return _records(settings, interval_points_sql(model, adapters, window_seconds, since_ms, until_ms))


def alert_times(settings: Settings, alert_id: str) -> tuple[int | None, int | None]:
    """(fired, resolved) in epoch milliseconds for an alert, the resolution being its series' next one."""
    fired = _records(settings, finalize_query(
        "SELECT toUnixTimestamp64Milli(timestamp) AS millis, fingerprint FROM alerts WHERE event_id = toUUID(%(id)s) "
        "LIMIT 1", {"id": alert_id}))
    if not fired:
        return None, None
    millis, fingerprint = int(fired[0]["millis"]), fired[0]["fingerprint"]
    if not fingerprint:
        return millis, None
    resolved = _records(settings, finalize_query(
        "SELECT toUnixTimestamp64Milli(timestamp) AS millis FROM alerts WHERE state = 'resolved' "
        "AND fingerprint = %(fp)s AND timestamp > fromUnixTimestamp64Milli(toInt64(%(at)s), 'UTC') "
        "ORDER BY timestamp LIMIT 1", {"fp": fingerprint, "at": millis}))
    return millis, int(resolved[0]["millis"]) if resolved else None

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

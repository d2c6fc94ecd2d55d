"""Window reads from ClickHouse: what every family's batch holds, read columnar and deduplicated.

The column names are the families' contract (`processors/families/`); the SQL that fills them is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np
import pandas as pd
from clickhouse_connect.driver.client import Client

from streams.store.client import READ_SETTINGS
from streams.store.runner import Store

INFERENCE_COLUMNS = {
    "model": "model",
    "adapter": "ifNull(adapter, '')",
    "prompt_version": "ifNull(prompt_template_version, '')",
    "status": "status",
    "latency_ms": "latency_ms",
    "ttft_ms": "ttft_ms",
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
    "prompt_toxicity": "prompt_toxicity",
    "response_toxicity": "response_toxicity",
    "toxic": "toxic",
    "refusal": "refusal",
    "sentiment": "sentiment",
    "cohort": "ifNull(cohort, '')",
    "language": "ifNull(language, '')",
    "groups": "groups",
    "prompt_length": "prompt_length",
    "response_length": "lengthUTF8(ifNull(response_text, ''))",
    "user_id": "ifNull(user_id, '')",
    "cost_input": "cost_input",
    "cost_output": "cost_output",
    "cost_total": "cost_total",
}
"""Column name -> SQL expression over inference_events; what every inference window batch holds."""

FEEDBACK_COLUMNS = {
    "thumbs": "ifNull(f.thumbs, '')",
    "score": "f.score",
    "correction": "f.correction",
    "matched": "i.event_id != toUUID('00000000-0000-0000-0000-000000000000')",
    "model": "i.model",
    "adapter": "ifNull(i.adapter, '')",
    "prompt_version": "ifNull(i.prompt_template_version, '')",
    "response_text": "i.response_text",
    "cohort": "ifNull(i.cohort, '')",
    "language": "ifNull(i.language, '')",
    "groups": "i.groups",
}
"""Feedback in the window joined to its inference event (matched is false while it has not arrived)."""



def _select(columns: dict[str, str]) -> str:
    return ", ".join(f"{expr} AS {name}" for name, expr in columns.items())


def _frame(client: Client, sql: str, start: datetime, end: datetime, columns: dict[str, str]) -> pd.DataFrame:
    """Columnar (query_df): building one Python tuple per row made a 60-s window take seconds to read."""
    frame = client.query_df(sql, parameters={"start": start, "end": end}, settings=READ_SETTINGS)
    return frame if len(frame.columns) else pd.DataFrame(columns=list(columns))


def fetch_inference(client: Client, start: datetime, end: datetime) -> pd.DataFrame:
    sql = (f"SELECT {_select(INFERENCE_COLUMNS)} FROM inference_events "
           "WHERE timestamp >= {start:DateTime64(3, 'UTC')} AND timestamp < {end:DateTime64(3, 'UTC')}")
    frame = _frame(client, sql, start, end, INFERENCE_COLUMNS)
    return frame.astype({"latency_ms": float, "ttft_ms": float, "prompt_tokens": float, "completion_tokens": float,
                         "response_toxicity": float, "sentiment": float, "toxic": bool, "refusal": bool,
                         "prompt_length": float, "response_length": float,
                         "cost_input": float, "cost_output": float, "cost_total": float})


def fetch_feedback(client: Client, start: datetime, end: datetime) -> pd.DataFrame:
    sql = (f"SELECT {_select(FEEDBACK_COLUMNS)} FROM feedback_events AS f "
           "LEFT JOIN inference_events AS i ON f.request_id = i.request_id "
           "WHERE f.timestamp >= {start:DateTime64(3, 'UTC')} AND f.timestamp < {end:DateTime64(3, 'UTC')}")
    return _frame(client, sql, start, end, FEEDBACK_COLUMNS).astype({"score": float, "matched": bool})


def _vectors(rows: Sequence[Sequence[Any]]) -> dict[str, np.ndarray]:
    found: dict[str, list[Any]] = {}
    for field, vector in rows:
        found.setdefault(field, []).append(vector)
    return {field: np.asarray(vectors, dtype=np.float32) for field, vectors in found.items()}


def fetch_window_embeddings(client: Client, start: datetime, end: datetime) -> dict[str, np.ndarray]:
    rows = client.query("SELECT field, vector FROM embeddings WHERE timestamp >= {start:DateTime64(3, 'UTC')} "
                        "AND timestamp < {end:DateTime64(3, 'UTC')}",
                        parameters={"start": start, "end": end}, settings=READ_SETTINGS).result_rows
    return _vectors(rows)


def fetch_reference(client: Client, size: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The pinned reference (`llmwatch drift set-reference`), else the first `size` embedded events."""
    ids = ("(SELECT event_id FROM drift_reference) " if client.command("SELECT count() FROM drift_reference")
           else f"(SELECT event_id FROM embeddings WHERE field = 'prompt' ORDER BY timestamp, event_id LIMIT {size}) ")
    rows = client.query(f"SELECT field, vector FROM embeddings WHERE event_id IN {ids}",
                        settings=READ_SETTINGS).result_rows
    features = client.query(f"SELECT {_select(INFERENCE_COLUMNS)} FROM inference_events WHERE event_id IN {ids}",
                            settings=READ_SETTINGS).result_rows
    return _vectors(rows), pd.DataFrame(features, columns=list(INFERENCE_COLUMNS))


def count_stored_points(client: Client, window_start: datetime, window_seconds: int, ids: Sequence[UUID]) -> int:
    if not ids:
        return 0
    return int(client.query(
        "SELECT count() FROM metric_points WHERE window_start = {start:DateTime64(3, 'UTC')} "
        "AND window_seconds = {seconds:UInt32} AND has({ids:Array(UUID)}, event_id)",
        parameters={"start": window_start, "seconds": window_seconds, "ids": list(ids)},
        settings=READ_SETTINGS).result_rows[0][0])


class StoreWindowReader:
    """`processors.ports.WindowReader` over the store thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def inference(self, start: datetime, end: datetime) -> pd.DataFrame:
        return await self.store.call(fetch_inference, start, end)

    async def feedback(self, start: datetime, end: datetime) -> pd.DataFrame:
        return await self.store.call(fetch_feedback, start, end)

    async def embeddings(self, start: datetime, end: datetime) -> dict[str, np.ndarray]:
        return await self.store.call(fetch_window_embeddings, start, end)

    async def reference(self, size: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        return await self.store.call(fetch_reference, size)

    async def stored(self, window_start: datetime, window_seconds: int, ids: Sequence[UUID]) -> int:
        return await self.store.call(count_stored_points, window_start, window_seconds, ids)

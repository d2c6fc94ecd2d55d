"""Every closed window, every metric family: read the window's batch from the store, compute, emit.

Reading the batch back from ClickHouse (rather than keeping windows in memory) makes metrics survive
restarts and rebalances and ignore replays (rows are deduplicated before they are read). Each window is
computed once when it closes (plus lateness) and again at the feedback horizon, so that feedback arriving
late, or before its inference event, still counts; the second pass replaces the first (same point ids).
Points are published to llm.metrics; the worker stores what arrives there, whoever produced it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from clickhouse_connect.driver.client import Client

from processors.families.bias import bias_metrics
from processors.families.common import FEEDBACK_COLUMNS, INFERENCE_COLUMNS
from processors.families.drift import EMBEDDING_FIELDS, TEXT_FEATURES, DriftReference, drift_metrics
from processors.families.feedback import feedback_metrics
from processors.families.latency import latency_metrics
from processors.families.toxicity import toxicity_metrics
from processors.windows import MetricValue, Window, closed_windows, metric_point
from schemas.events import MetricPoint, utcnow
from streams.settings import Metrics
from streams.store import READ_SETTINGS
from streams.store_runner import StoreRunner

log = logging.getLogger(__name__)

PublishMetrics = Callable[[Sequence[MetricPoint]], Awaitable[None]]


def _select(columns: dict[str, str]) -> str:
    return ", ".join(f"{expr} AS {name}" for name, expr in columns.items())


def _frame(client: Client, sql: str, window: Window, columns: dict[str, str]) -> pd.DataFrame:
    """Columnar (query_df): building one Python tuple per row made a 60-s window take seconds to read."""
    frame = client.query_df(sql, parameters={"start": window.start, "end": window.end}, settings=READ_SETTINGS)
    return frame if len(frame.columns) else pd.DataFrame(columns=list(columns))


def fetch_inference(client: Client, window: Window) -> pd.DataFrame:
    sql = (f"SELECT {_select(INFERENCE_COLUMNS)} FROM inference_events "
           "WHERE timestamp >= {start:DateTime64(3, 'UTC')} AND timestamp < {end:DateTime64(3, 'UTC')}")
    frame = _frame(client, sql, window, INFERENCE_COLUMNS)
    return frame.astype({"latency_ms": float, "ttft_ms": float, "prompt_tokens": float, "completion_tokens": float,
                         "response_toxicity": float, "sentiment": float, "toxic": bool, "refusal": bool})


def fetch_feedback(client: Client, window: Window) -> pd.DataFrame:
    sql = (f"SELECT {_select(FEEDBACK_COLUMNS)} FROM feedback_events AS f "
           "LEFT JOIN inference_events AS i ON f.request_id = i.request_id "
           "WHERE f.timestamp >= {start:DateTime64(3, 'UTC')} AND f.timestamp < {end:DateTime64(3, 'UTC')}")
    return _frame(client, sql, window, FEEDBACK_COLUMNS).astype({"score": float, "matched": bool})


def _vectors(rows: list[tuple[Any, ...]]) -> dict[str, np.ndarray]:
    found: dict[str, list[Any]] = {}
    for field, vector in rows:
        found.setdefault(field, []).append(vector)
    return {field: np.asarray(vectors, dtype=np.float32) for field, vectors in found.items()}


def fetch_window_embeddings(client: Client, window: Window) -> dict[str, np.ndarray]:
    rows = client.query("SELECT field, vector FROM embeddings WHERE timestamp >= {start:DateTime64(3, 'UTC')} "
                        "AND timestamp < {end:DateTime64(3, 'UTC')}",
                        parameters={"start": window.start, "end": window.end}, settings=READ_SETTINGS).result_rows
    return _vectors(rows)


def fetch_reference(client: Client, size: int) -> DriftReference:
    """The pinned reference (`llmwatch drift set-reference`), else the first `size` embedded events."""
    ids = ("(SELECT event_id FROM drift_reference) " if client.command("SELECT count() FROM drift_reference")
           else f"(SELECT event_id FROM embeddings WHERE field = 'prompt' ORDER BY timestamp, event_id LIMIT {size}) ")
    rows = client.query(f"SELECT field, vector FROM embeddings WHERE event_id IN {ids}",
                        settings=READ_SETTINGS).result_rows
    columns = {name: INFERENCE_COLUMNS[name] for name in TEXT_FEATURES}
    features = client.query(f"SELECT {_select(columns)} FROM inference_events WHERE event_id IN {ids}",
                            settings=READ_SETTINGS).result_rows
    return DriftReference(_vectors(rows), pd.DataFrame(features, columns=list(columns)))


class WindowJob:
    def __init__(self, store: StoreRunner, publish: PublishMetrics, settings: Metrics, bias_attributes: list[str],
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.publish = publish
        self.settings = settings
        self.bias_attributes = bias_attributes
        self.clock = clock
        now = clock()
        horizon = timedelta(seconds=settings.feedback_horizon_seconds)
        self.after = {seconds: now - timedelta(seconds=seconds + settings.lateness_seconds)
                      for seconds in settings.window_seconds}
        self.second_pass: deque[Window] = deque(sorted(
            (w for seconds in settings.window_seconds
             for w in closed_windows(now - horizon, self.after[seconds], seconds, 0)),
            key=lambda w: w.end))
        self.computed = 0

    async def tick(self) -> list[MetricPoint]:
        now = self.clock()
        points: list[MetricPoint] = []
        for seconds in self.settings.window_seconds:
            for window in closed_windows(self.after[seconds], now, seconds, self.settings.lateness_seconds):
                points += await self.compute(window)
                self.after[seconds] = window.end
                if self.settings.feedback_horizon_seconds:
                    self.second_pass.append(window)
        horizon = timedelta(seconds=self.settings.feedback_horizon_seconds)
        while self.second_pass and self.second_pass[0].end + horizon <= now:
            points += await self.compute(self.second_pass.popleft(), feedback_only=True)
        return points

    async def compute(self, window: Window, *, feedback_only: bool = False) -> list[MetricPoint]:
        inference = await self.store.call(fetch_inference, window)
        feedback = await self.store.call(fetch_feedback, window)
        drift_inputs = None if feedback_only else await self._drift_inputs(window)
        # On a thread of its own: a busy window must not hold up the event loop that ingests.
        values = await asyncio.to_thread(self._families, window, inference, feedback, drift_inputs, feedback_only)
        computed_at = self.clock()
        points = [metric_point(window, value, computed_at) for value in values]
        if points:
            await self.publish(points)
        self.computed += 1
        return points

    async def _drift_inputs(self, window: Window) -> tuple[dict[str, np.ndarray], DriftReference] | None:
        embeddings = await self.store.call(fetch_window_embeddings, window)
        if not embeddings:
            return None
        return embeddings, await self.store.call(fetch_reference, self.settings.drift_reference_size)

    def _families(self, window: Window, inference: pd.DataFrame, feedback: pd.DataFrame,
                  drift_inputs: tuple[dict[str, np.ndarray], DriftReference] | None,
                  feedback_only: bool) -> list[MetricValue]:
        values: list[MetricValue] = []
        if not feedback_only:
            values += latency_metrics(inference, window.seconds)
            values += toxicity_metrics(inference)
        if drift_inputs is not None:
            embeddings, reference = drift_inputs
            values += drift_metrics({f: embeddings[f] for f in EMBEDDING_FIELDS if f in embeddings},
                                    inference[list(TEXT_FEATURES)], len(inference), reference,
                                    self.settings.drift_min_window_samples)
        values += feedback_metrics(feedback)
        values += bias_metrics(inference, feedback, self.bias_attributes, self.settings.bias_min_samples)
        return values

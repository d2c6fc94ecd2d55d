"""Every closed window, every metric family: read the window's batch from the store, compute, emit.

Reading the batch back from ClickHouse (rather than keeping windows in memory) makes metrics survive
restarts and rebalances and ignore replays (rows are deduplicated before they are read). Each window is
computed once when it closes (plus lateness) and again at the feedback horizon, so that feedback arriving
late, or before its inference event, still counts; the second pass replaces the first (same point ids).
Points are published to llm.metrics; the worker stores what arrives there, whoever produced it.

A window's points reach the store in more than one insert (they are keyed by model, so they travel on
several partitions). Once every point of a pass is stored, the job publishes one more point,
`window.complete` (model '', value: how many points the pass wrote): a reader that finds it knows the
window is whole, in the table and on the topic alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import numpy as np
import pandas as pd

from processors.families.bias import bias_metrics
from processors.families.cost import cost_metrics
from processors.families.drift import EMBEDDING_FIELDS, TEXT_FEATURES, DriftReference, drift_metrics
from processors.families.feedback import feedback_metrics
from processors.families.latency import latency_metrics
from processors.families.toxicity import toxicity_metrics
from processors.ports import WindowReader
from processors.windows import MetricValue, Window, closed_windows, metric_point, with_completion
from schemas.events import MetricPoint, utcnow

log = logging.getLogger(__name__)

PublishMetrics = Callable[[Sequence[MetricPoint]], Awaitable[None]]
ObserveWindow = Callable[[int, bool, float], None]
"""(window seconds, feedback-horizon pass, seconds taken): told after each window is computed."""

COMPLETE = "window.complete"
"""The marker point: published after every other point of a window's pass is stored."""


@dataclass(frozen=True)
class _Pass:
    """A computed pass whose points are on their way to the store."""

    window: Window
    ids: tuple[UUID, ...]
    published_at: datetime


@dataclass(frozen=True)
class WindowPlan:
    """Which windows close when, and what the families need to judge them (from the metrics settings)."""

    window_seconds: Sequence[int]
    lateness_seconds: float = 1.0
    feedback_horizon_seconds: float = 600
    drift_reference_size: int = 200
    drift_min_window_samples: int = 30
    bias_min_samples: int = 30
    bias_attributes: Sequence[str] = ("cohort", "language")
    top_users: int = 5
    """Biggest spenders per series and window with a `cost.user_total` point."""
    complete_timeout_seconds: float = 300
    """A pass whose points are not all stored by then gets no `window.complete` (an ERROR says so)."""


class WindowJob:
    def __init__(self, reader: WindowReader, publish: PublishMetrics, settings: WindowPlan,
                 clock: Callable[[], datetime] = utcnow, observe: ObserveWindow | None = None) -> None:
        self.observe = observe
        self.reader = reader
        self.publish = publish
        self.settings = settings
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
        self.unconfirmed: deque[_Pass] = deque()

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
        return points + await self.mark_complete()

    async def mark_complete(self) -> list[MetricPoint]:
        """Publish `window.complete` for each pass whose points are all stored, in the order computed."""
        markers = []
        waiting: deque[_Pass] = deque()
        while self.unconfirmed:
            computed = self.unconfirmed.popleft()
            stored = await self.reader.stored(computed.window.start, computed.window.seconds, computed.ids)
            if stored >= len(computed.ids):
                markers.append(metric_point(computed.window, MetricValue(COMPLETE, float(len(computed.ids))),
                                            self.clock()))
            elif self.clock() - computed.published_at > timedelta(seconds=self.settings.complete_timeout_seconds):
                log.error("window %s (%d s): only %d of its %d points were stored after %.0f s; it stays without "
                          "%s (see dead_letters)", computed.window.start.isoformat(), computed.window.seconds,
                          stored, len(computed.ids), self.settings.complete_timeout_seconds, COMPLETE)
            else:
                waiting.append(computed)
        self.unconfirmed = waiting
        if markers:
            await self.publish(markers)
        return markers

    async def compute(self, window: Window, *, feedback_only: bool = False) -> list[MetricPoint]:
        started = time.perf_counter()
        inference = await self.reader.inference(window.start, window.end)
        feedback = await self.reader.feedback(window.start, window.end)
        drift_inputs = None if feedback_only else await self._drift_inputs(window)
        # On a thread of its own: a busy window must not hold up the event loop that ingests.
        values = await asyncio.to_thread(self._families, window, inference, feedback, drift_inputs, feedback_only)
        if self.observe is not None:
            self.observe(window.seconds, feedback_only, time.perf_counter() - started)
        computed_at = self.clock()
        points = with_completion(window, values, computed_at)
        if points:
            await self.publish(points)
        self.unconfirmed.append(_Pass(window, tuple(p.event_id for p in points), computed_at))
        self.computed += 1
        return points

    async def _drift_inputs(self, window: Window) -> tuple[dict[str, np.ndarray], DriftReference] | None:
        embeddings = await self.reader.embeddings(window.start, window.end)
        if not embeddings:
            return None
        vectors, rows = await self.reader.reference(self.settings.drift_reference_size)
        return embeddings, DriftReference(vectors, rows[list(TEXT_FEATURES)])

    def _families(self, window: Window, inference: pd.DataFrame, feedback: pd.DataFrame,
                  drift_inputs: tuple[dict[str, np.ndarray], DriftReference] | None,
                  feedback_only: bool) -> list[MetricValue]:
        values: list[MetricValue] = []
        if not feedback_only:
            values += latency_metrics(inference, window.seconds)
            values += toxicity_metrics(inference)
            values += cost_metrics(inference, self.settings.top_users)
        if drift_inputs is not None:
            embeddings, reference = drift_inputs
            values += drift_metrics({f: embeddings[f] for f in EMBEDDING_FIELDS if f in embeddings},
                                    inference[list(TEXT_FEATURES)], len(inference), reference,
                                    self.settings.drift_min_window_samples)
        values += feedback_metrics(feedback)
        values += bias_metrics(inference, feedback, list(self.settings.bias_attributes), self.settings.bias_min_samples)
        return values

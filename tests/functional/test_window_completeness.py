"""A replayed event never counts twice in a window, and `window.complete` comes only once a pass is stored."""

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from llmwatch.traffic import inference_event
from processors.scoring import Scorers, scored_rows
from processors.text_signals import GroupLexicon
from processors.toxicity import ProfanityCheckScorer
from processors.validation import Limits, RawRecord, decode
from processors.window_job import COMPLETE, WindowJob, WindowPlan
from processors.windows import Window, floor_time
from schemas import InferenceEvent, MetricPoint
from schemas.events import ScoredInferenceEvent
from streams.store.runner import StoreRunner
from streams.store.sql import run_query
from streams.store.windows import StoreWindowReader
from streams.store.writer import ClickHouseWriter

START = floor_time(datetime.now(UTC) - timedelta(days=3), 3600)
SCORERS = Scorers(ProfanityCheckScorer(), 0.5, GroupLexicon.load(), SentimentIntensityAnalyzer())
PLAN = WindowPlan(window_seconds=(10,), lateness_seconds=1, feedback_horizon_seconds=0, bias_attributes=[])


class Topic:
    """Stands in for llm.metrics and the worker's agent storing it: points wait here until `deliver()`."""

    def __init__(self, writer: ClickHouseWriter) -> None:
        self.writer = writer
        self.published: list[MetricPoint] = []
        self.waiting: list[MetricPoint] = []

    async def __call__(self, points: Sequence[MetricPoint]) -> None:
        self.published += points
        self.waiting += points

    def deliver(self, n: int | None = None) -> None:
        batch, self.waiting = self.waiting[:n], self.waiting[len(self.waiting[:n]):]
        assert asyncio.run(self.writer.write(batch)) == []


def events_in(window: Window, model: str, n: int) -> list[InferenceEvent]:
    rng = random.Random(model)
    return [inference_event(rng, error_ratio=0).model_copy(update={
        "model": model, "request_id": f"{model}-{i}",
        "timestamp": window.start + timedelta(seconds=i % window.seconds)}) for i in range(n)]


def test_a_replayed_event_counts_once_in_its_window(store: StoreRunner) -> None:
    window = Window(START, 10)
    writer = ClickHouseWriter(store, max_rows=1000, max_backoff_seconds=1)
    events = events_in(window, "replay-window", 20)
    assert asyncio.run(writer.write_rows(ScoredInferenceEvent, scored_rows(events, SCORERS))) == []
    # the same batch stored again, as after a crash before the commit: a part of its own, not yet merged
    assert asyncio.run(writer.write_rows(ScoredInferenceEvent, scored_rows(events[:5], SCORERS))) == []
    # and a producer that sends no event_id: the same record read twice decodes to the same event
    sent_at = int((window.start + timedelta(seconds=3)).timestamp() * 1000)
    record = RawRecord("llm.inference", 0, 42, b'{"request_id": "replay-window-x", "model": "replay-window", '
                       b'"prompt": "hi", "latency_ms": 5}', sent_at)
    limits = Limits(10_000, 100)
    twice = [decode(record, InferenceEvent, limits), decode(record, InferenceEvent, limits)]
    for event in twice:
        assert isinstance(event, InferenceEvent)
        assert asyncio.run(writer.write_rows(ScoredInferenceEvent, scored_rows([event], SCORERS))) == []

    topic = Topic(writer)
    job = WindowJob(StoreWindowReader(store), topic, PLAN, clock=lambda: START + timedelta(hours=1))
    points = asyncio.run(job.compute(window))
    assert sum(p.value for p in points if p.name == "requests" and p.model == "replay-window") == 21


def test_window_complete_is_published_after_every_point_of_the_pass_is_stored(store: StoreRunner) -> None:
    window = Window(START + timedelta(minutes=10), 10)
    writer = ClickHouseWriter(store, max_rows=1000, max_backoff_seconds=1)
    for model in ("complete-a", "complete-b"):
        assert asyncio.run(writer.write_rows(ScoredInferenceEvent,
                                             scored_rows(events_in(window, model, 12), SCORERS))) == []
    now = [window.end + timedelta(seconds=2)]
    topic = Topic(writer)
    job = WindowJob(StoreWindowReader(store), topic, PLAN, clock=lambda: now[0])
    job.after[10] = window.start  # this window is the next to close
    computed = asyncio.run(job.tick())
    assert computed and all(p.name != COMPLETE for p in computed)
    assert asyncio.run(job.tick()) == [], "nothing is stored yet: no marker"

    topic.deliver(len(computed) - 1)
    assert asyncio.run(job.tick()) == [], "one point is still on its way: no marker"
    topic.deliver()
    (marker,) = asyncio.run(job.tick())
    assert (marker.name, marker.model, marker.value) == (COMPLETE, "", float(len(computed)))
    assert (marker.window_start, marker.window_seconds) == (window.start, 10)
    assert topic.published[-1] == marker, "the marker is the last point of its window published"
    topic.deliver()
    stored = asyncio.run(store.call(run_query, (
        "SELECT countIf(name != 'window.complete'), anyIf(value, name = 'window.complete') FROM metric_points "
        f"WHERE window_start = '{window.start:%Y-%m-%d %H:%M:%S}' AND window_seconds = 10")))
    assert stored.rows == [[len(computed), float(len(computed))]]

    again = asyncio.run(job.compute(window))
    topic.deliver()
    (second,) = asyncio.run(job.mark_complete())
    assert second.event_id == marker.event_id, "one marker per window: a recomputation replaces it"
    assert second.value == len(again)


def test_a_quiet_window_is_marked_complete_with_no_points(store: StoreRunner) -> None:
    window = Window(START + timedelta(minutes=30), 10)
    topic = Topic(ClickHouseWriter(store, max_rows=1000, max_backoff_seconds=1))
    job = WindowJob(StoreWindowReader(store), topic, PLAN, clock=lambda: window.end + timedelta(seconds=2))
    job.after[10] = window.start
    (marker,) = asyncio.run(job.tick())
    assert (marker.name, marker.value, marker.window_start) == (COMPLETE, 0.0, window.start)

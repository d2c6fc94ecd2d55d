"""The window job on a real store: joins in either order, late feedback, idempotent recomputation."""

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from llmwatch.traffic import inference_event
from processors.scoring import Scorers, scored_rows
from processors.text_signals import GroupLexicon
from processors.toxicity import ProfanityCheckScorer
from processors.window_job import WindowJob, WindowPlan
from processors.windows import Window, floor_time
from schemas import FeedbackEvent, MetricPoint
from schemas.events import ScoredInferenceEvent
from streams.store.runner import StoreRunner
from streams.store.sql import run_query
from streams.store.windows import StoreWindowReader
from streams.store.writer import ClickHouseWriter

START = floor_time(datetime.now(UTC) - timedelta(days=2), 3600)  # recent: older rows would expire by TTL
SCORERS = Scorers(ProfanityCheckScorer(), 0.5, GroupLexicon.load(), SentimentIntensityAnalyzer())


class Published:
    """Stands in for llm.metrics and the worker's agent that stores what arrives on it."""

    def __init__(self, writer: ClickHouseWriter) -> None:
        self.writer = writer
        self.points: list[MetricPoint] = []

    async def __call__(self, points: Sequence[MetricPoint]) -> None:
        self.points += points
        assert await self.writer.write(points) == []


def values(points: list[MetricPoint], name: str) -> dict[tuple[str, str], float]:
    return {(p.model, p.adapter): p.value for p in points if p.name == name}


def test_feedback_before_its_inference_counts_once_the_inference_arrives(store: StoreRunner) -> None:
    writer = ClickHouseWriter(store, max_rows=1000, max_backoff_seconds=1)
    published = Published(writer)
    job = WindowJob(StoreWindowReader(store), published, WindowPlan(window_seconds=(10,), bias_attributes=["cohort"]),
                    clock=lambda: START + timedelta(hours=1))
    window = Window(START, 10)
    rng = random.Random("feedback-before-inference")
    events = [inference_event(rng).model_copy(update={"model": "join-test", "adapter": None,
                                                      "request_id": f"join-test-{i}", "prompt_template_version": "v1",
                                                      "timestamp": START + timedelta(seconds=i % 10)})
              for i in range(20)]
    feedback = [FeedbackEvent(request_id=e.request_id, thumbs="down" if i < 5 else "up",
                              timestamp=START + timedelta(seconds=5)) for i, e in enumerate(events)]

    asyncio.run(writer.write(feedback))
    first = asyncio.run(job.compute(window))
    assert values(first, "feedback_unmatched") == {("", ""): 20}
    assert not values(first, "thumbs_down_rate")

    asyncio.run(writer.write_rows(ScoredInferenceEvent, scored_rows(events, SCORERS)))
    second = asyncio.run(job.compute(window, feedback_only=True))
    assert values(second, "feedback_unmatched") == {("", ""): 0}
    assert values(second, "thumbs_down_rate") == {("join-test", ""): 0.25}
    assert {p.event_id for p in first if p.name == "feedback_unmatched"} == \
        {p.event_id for p in second if p.name == "feedback_unmatched"}

    third = asyncio.run(job.compute(window))
    assert values(third, "requests") == {("join-test", ""): 20}
    stored = asyncio.run(store.call(run_query, "SELECT value FROM metric_points WHERE name = 'feedback_unmatched' "
                                               f"AND window_start = '{START:%Y-%m-%d %H:%M:%S}' AND model = ''"))
    assert stored.rows == [[0.0]], "the second pass must replace the first, not sit beside it"
    assert len(published.points) == len(first) + len(second) + len(third)


def test_ticks_compute_each_closed_window_once_then_again_at_the_horizon(store: StoreRunner) -> None:
    now = [START + timedelta(hours=1)]
    writer = ClickHouseWriter(store, max_rows=1000, max_backoff_seconds=1)
    plan = WindowPlan(window_seconds=(10,), lateness_seconds=1, feedback_horizon_seconds=30, bias_attributes=[])
    job = WindowJob(StoreWindowReader(store), Published(writer), plan, clock=lambda: now[0])
    assert len(job.second_pass) == 1, "a window closed inside the horizon at start still gets its second pass"
    asyncio.run(job.tick())
    assert job.computed == 1  # the last window closed at start
    now[0] += timedelta(seconds=20)
    asyncio.run(job.tick())
    # two newly closed windows, and the horizon passes of the two oldest (the start one and the first tick's)
    assert job.computed == 1 + 2 + 2


def test_costs_are_stored_at_ingest_and_become_cost_points(store: StoreRunner) -> None:
    from processors.pricing import PriceBook

    prices = PriceBook.from_settings({"cost-test": {"input": 1.0, "output": 4.0, "cached_input": 0.1}}, {}, {},
                                     use_table=False)
    scorers = Scorers(ProfanityCheckScorer(), 0.5, GroupLexicon.load(), SentimentIntensityAnalyzer(), prices)
    writer = ClickHouseWriter(store, max_rows=1000, max_backoff_seconds=1)
    published = Published(writer)
    start = START + timedelta(minutes=30)
    job = WindowJob(StoreWindowReader(store), published, WindowPlan(window_seconds=(10,), bias_attributes=[]),
                    clock=lambda: start + timedelta(hours=1))
    rng = random.Random("cost")
    events = [inference_event(rng).model_copy(update={
        "model": "cost-test", "adapter": None, "request_id": f"cost-test-{i}", "prompt_template_version": "v1",
        "prompt_tokens": 1000, "completion_tokens": 100, "cached_prompt_tokens": 500, "status": "ok",
        "user_id": f"user-{i % 2}", "cohort": "beta", "timestamp": start + timedelta(seconds=i % 10)})
        for i in range(4)]
    asyncio.run(writer.write_rows(ScoredInferenceEvent, scored_rows(events, scorers)))
    stored = asyncio.run(store.call(run_query, "SELECT sum(cost_total), any(price_version) FROM inference_events "
                                               "WHERE model = 'cost-test'"))
    each = (500 * 1.0 + 500 * 0.1 + 100 * 4.0) / 1e6
    assert abs(stored.rows[0][0] - 4 * each) < 1e-12 and stored.rows[0][1].startswith("settings:")

    points = asyncio.run(job.compute(Window(start, 10)))
    assert abs(values(points, "cost_total")[("cost-test", "")] - 4 * each) < 1e-12
    users = {p.labels["user"]: p.value for p in points if p.name == "cost.user_total"}
    assert users.keys() == {"user-0", "user-1"} and abs(users["user-0"] - 2 * each) < 1e-12

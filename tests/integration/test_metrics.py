"""Metrics from a real worker process on the real broker and store, in real time (2-second windows)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from itertools import count

import pytest

from llmwatch.traffic import topic_event
from schemas import InferenceEvent
from streams.settings import Metrics
from tests.integration.conftest import Worker, wait_until

pytestmark = pytest.mark.integration

TOXIC = ["You are a stupid fucking idiot.", "Shut up, you worthless piece of shit.", "Go to hell, moron."]
CLEAN = ["Expect light rain tomorrow.", "Preheat the oven to 180 degrees.", "Open Settings, then Security."]


def publish_for(worker: Worker, seconds: float, rate: float, make: Callable[[int], InferenceEvent]) -> int:
    """Publish in real time, since windows close on the clock; returns how many were sent."""
    sent = 0
    start = time.monotonic()
    with worker.publisher() as publisher:
        for n in count():
            elapsed = time.monotonic() - start
            if elapsed > seconds:
                break
            publisher.publish(make(n))
            sent += 1
            ahead = (n + 1) / rate - elapsed
            if ahead > 0:
                time.sleep(ahead)
    return sent


def metric(worker: Worker, name: str, where: str = "1") -> list[list[float | str]]:
    return worker.sql(f"SELECT model, labels, value FROM metric_points WHERE name = '{name}' AND {where} "
                      "ORDER BY window_start")


@pytest.fixture(scope="module")
def metrics_worker(make_worker: Callable[..., Worker]) -> Iterator[Worker]:
    worker = make_worker(metrics=Metrics(window_seconds=(2,), lateness_seconds=1.0, feedback_horizon_seconds=4,
                                         embed_per_second=0, bias_min_samples=20)).start()
    yield worker
    worker.stop()


def test_toxic_rate_is_low_for_clean_text_and_high_for_toxic_text(metrics_worker: Worker) -> None:
    def make(n: int) -> InferenceEvent:
        toxic = n % 2 == 1
        return InferenceEvent(request_id=f"tox-{n}", model="toxic-model" if toxic else "clean-model",
                              prompt="Say something.", latency_ms=50.0,
                              response_text=(TOXIC if toxic else CLEAN)[n % 3])

    publish_for(metrics_worker, 5, 60, make)
    wait_until(lambda: {row[0] for row in metric(metrics_worker, "toxic_rate")} >= {"clean-model", "toxic-model"},
               60, "toxic_rate points for both models")
    rates: dict[str, list[float]] = {}
    for model, _, value in metric(metrics_worker, "toxic_rate"):
        rates.setdefault(str(model), []).append(float(value))
    assert max(rates["clean-model"]) < 0.05
    assert min(rates["toxic-model"]) > 0.9


def test_a_planted_cohort_disparity_is_reported_and_equal_cohorts_are_not(metrics_worker: Worker) -> None:
    def make(n: int) -> InferenceEvent:
        model = "biased-model" if n % 2 else "fair-model"
        cohort = "free" if (n // 2) % 2 else "pro"
        # biased: 'free' gets a toxic answer 3 times in 5, 'pro' never; fair: both 1 in 5.
        toxic = (n // 4) % 5 < 3 if model == "biased-model" and cohort == "free" else \
            (model == "fair-model" and (n // 4) % 5 == 0)
        return InferenceEvent(request_id=f"bias-{n}", model=model, cohort=cohort, prompt="Answer me.",
                              latency_ms=50.0, response_text=TOXIC[n % 3] if toxic else CLEAN[n % 3])

    publish_for(metrics_worker, 6, 100, make)
    where = "labels['attribute'] = 'cohort'"
    wait_until(lambda: {row[0] for row in metric(metrics_worker, "bias.toxicity_rate.detected", where)}
               >= {"biased-model", "fair-model"}, 60, "disparity verdicts for both models")
    verdicts: dict[str, list[float]] = {}
    for model, labels, value in metric(metrics_worker, "bias.toxicity_rate.detected", where):
        verdicts.setdefault(str(model), []).append(float(value))
        if model == "biased-model" and value:
            assert labels == {"attribute": "cohort", "max_group": "free", "min_group": "pro", "groups": "2"}
    assert max(verdicts["fair-model"]) == 0.0
    assert sum(verdicts["biased-model"]) >= len(verdicts["biased-model"]) - 1


def test_a_topic_shift_is_detected_within_two_windows_and_the_reference_stream_is_quiet(
        make_worker: Callable[..., Worker]) -> None:
    # Embeddings land in the store after the events they sample; a lateness of 4 s lets a window wait for them
    # on a loaded machine, where 1.5 s left both windows after the shift short of samples (no verdict).
    worker = make_worker(metrics=Metrics(window_seconds=(2,), lateness_seconds=4, feedback_horizon_seconds=0,
                                         embed_per_second=40, drift_reference_size=80,
                                         drift_min_window_samples=30)).start()
    # The worker consumes before its embedder has loaded the model; the reference needs the model.
    wait_until(lambda: worker.health()["embedder"]["ready"], 180, "the embedder to load its model")
    rng = random.Random(17)
    publish_for(worker, 20, 40, lambda n: topic_event(rng, "weather", request_id=f"w-{n}"))
    shift_at = time.time()
    publish_for(worker, 10, 40, lambda n: topic_event(rng, "cooking", request_id=f"c-{n}"))
    wait_until(lambda: worker.count("SELECT count() FROM metric_points WHERE name = 'drift.window_detected' "
                                    f"AND window_start >= toDateTime64({shift_at}, 3)") >= 2,
               90, "two drift verdicts after the shift")
    verdicts = worker.sql("SELECT toUnixTimestamp64Milli(window_start) / 1000, value FROM metric_points "
                          "WHERE name = 'drift.window_detected' ORDER BY window_start")
    before = [value for start, value in verdicts if float(start) + 2 <= shift_at]
    after = [value for start, value in verdicts if float(start) >= shift_at]
    assert len(before) >= 5, f"too few windows had enough samples: {verdicts}"
    assert sum(before) <= 0.05 * len(before), f"drift raised on the reference distribution: {verdicts}"
    assert 1.0 in after[:2], f"the shift was not caught within two windows: {verdicts}"
    rate = worker.sql("SELECT avg(value) FROM metric_points WHERE name = 'drift.sample_rate'")[0][0]
    assert 0 < float(rate) <= 1
    worker.stop()

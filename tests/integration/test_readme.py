"""The README's example and queries run as written, so the documentation cannot drift."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

from schemas import FeedbackEvent, InferenceEvent, MetricPoint
from schemas.events import DeploymentEvent, TrainingRunEvent
from streams.settings import Metrics
from tests.integration.conftest import Worker, to_env, wait_until

pytestmark = pytest.mark.integration

README = (Path(__file__).parents[2] / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_commands() -> None:
    first = blocks("bash")[0].splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]


def test_the_publishing_example_runs_and_its_events_land(worker: Worker) -> None:
    (example,) = blocks("python")
    result = subprocess.run([sys.executable, "-c", example], env=os.environ | to_env(worker.settings),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: worker.count("SELECT count() FROM inference_events WHERE request_id = 'req-42'") == 1, 60,
               "the README's inference event")
    wait_until(lambda: worker.count("SELECT count() FROM feedback_events WHERE request_id = 'req-42'") == 1, 60,
               "the README's feedback event")


@dataclass(frozen=True)
class Published:
    """What `published` sent to a worker of its own, so that each query's answer is known in advance."""

    worker: Worker
    events: list[InferenceEvent]
    first_minute: datetime


@pytest.fixture(scope="module")
def published(make_worker: Callable[..., Worker]) -> Iterator[Published]:
    """Two models in two minutes of the last hour, rated feedback, garbage on both topics and bias points.
    The worker computes no bias points of its own (too few samples) and embeds nothing."""
    worker = make_worker(metrics=Metrics(bias_min_samples=1_000_000, embed_per_second=0)).start()
    minute = (datetime.now(UTC) - timedelta(minutes=10)).replace(second=0, microsecond=0)
    a = [InferenceEvent(request_id=f"readme-a-{i}", model="readme-a", prompt="hi", latency_ms=100.0, ttft_ms=10.0,
                        prompt_tokens=10, completion_tokens=None if i == 5 else 20,
                        status="error" if i == 5 else "ok", prompt_template_version="v1", cohort="pro",
                        language="en", user_id=f"u-{i % 3}", timestamp=minute + timedelta(seconds=5 + i))
         for i in range(6)]
    b = [InferenceEvent(request_id=f"readme-b-{i}", model="readme-b", adapter="readme-lora", prompt="hi",
                        latency_ms=300.0, ttft_ms=30.0, prompt_tokens=5, completion_tokens=None if i == 3 else 50,
                        status="error" if i == 3 else "ok", prompt_template_version="v2", cohort="free",
                        language="de", user_id="u-9", timestamp=minute + timedelta(minutes=3, seconds=5 + i))
         for i in range(4)]
    thumbs: list[tuple[InferenceEvent, Literal["up", "down"]]] = [
        (a[0], "down"), (a[1], "up"), (a[2], "up"), (a[3], "up"),
        (b[0], "down"), (b[1], "down"), (b[2], "down"), (b[3], "up"),
    ]
    feedback = [FeedbackEvent(request_id=event.request_id, thumbs=says) for event, says in thumbs]
    feedback += [FeedbackEvent(request_id=a[4].request_id, score=0.1),  # no thumbs: not rated
                 FeedbackEvent(request_id="readme-no-such-request", thumbs="down")]  # joins nothing

    def gap(name: str, attribute: str, worst: str, best: str, value: float, start: datetime) -> MetricPoint:
        return MetricPoint(name=name, value=value, window_start=start, window_seconds=10, model="readme-a",
                           labels={"attribute": attribute, "max_group": worst, "min_group": best})

    points = [
        gap("bias.toxic_rate.gap", "cohort", "free", "pro", 0.2, minute),
        gap("bias.toxic_rate.gap", "cohort", "free", "pro", 0.35, minute + timedelta(seconds=10)),
        gap("bias.refusal_rate.gap", "language", "de", "en", 0.1, minute),
        gap("bias.toxic_rate.gap", "cohort", "free", "pro", 0.9, minute - timedelta(hours=2)),  # too old
        gap("bias.toxic_rate", "cohort", "free", "pro", 0.8, minute),  # not a gap
    ]
    hour = minute.replace(minute=0)
    windows = [  # a 60-s window that is complete, and one whose window.complete never came
        MetricPoint(name="latency_p99_ms", value=123.4, window_start=hour - timedelta(hours=1), window_seconds=60,
                    model="readme-a"),
        MetricPoint(name="window.complete", value=1, window_start=hour - timedelta(hours=1), window_seconds=60),
        MetricPoint(name="latency_p99_ms", value=999.0, window_start=hour - timedelta(hours=1, minutes=1),
                    window_seconds=60, model="readme-b"),
    ]
    runs = [TrainingRunEvent(run_id="readme-run", status="queued", base_model="readme-a",
                             timestamp=minute, reason="alert p99"),
            TrainingRunEvent(run_id="readme-run", status="succeeded", base_model="readme-a", dataset_size=40,
                             timestamp=minute + timedelta(minutes=2), reason="passed the gate")]
    deployments = [DeploymentEvent(deployment_id="dep-readme-lora", base_model="readme-a", adapter_name="readme-lora",
                                   action="canary", status="succeeded", traffic_percent=10, route="readme-a",
                                   weights={"readme-a": 90, "readme-lora": 10}, actor="deployer",
                                   reason="canary step 1 of 3", timestamp=minute)]
    topics = worker.settings.topics
    with worker.publisher() as publisher:
        sent: list[InferenceEvent | FeedbackEvent | MetricPoint | TrainingRunEvent | DeploymentEvent] = [
            *a, *b, *feedback, *points, *windows, *runs, *deployments]
        for event in sent:
            publisher.publish(event)
        for _ in range(3):
            publisher.publish_raw(topics.inference, b"this is not json {")
        for _ in range(2):
            publisher.publish_raw(topics.feedback, b"")
    counts = "SELECT (SELECT count() FROM inference_events), (SELECT count() FROM feedback_events), " \
             "(SELECT count() FROM dead_letters), (SELECT count() FROM metric_points WHERE name LIKE 'bias.%')"
    wait_until(lambda: worker.sql(counts) == [[10, len(feedback), 5, len(points)]], 120, "what was published")
    wait_until(lambda: worker.sql("SELECT (SELECT count() FROM metric_points WHERE window_seconds = 60 AND "
                                  "window_start < now() - INTERVAL 50 MINUTE), (SELECT count() FROM training_runs), "
                                  "(SELECT count() FROM deployments)")
               == [[len(windows), len(runs), len(deployments)]], 120, "the window points, training run, deployment")
    yield Published(worker, [*a, *b], minute)
    worker.stop()


def minute_of(value: object) -> datetime:
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def latency_per_model(rows: list[list[Any]], published: Published) -> None:
    assert rows == [["readme-a", None, 6, [100.0, 100.0, 100.0], 10.0],
                    ["readme-b", "readme-lora", 4, [300.0, 300.0, 300.0], 30.0]]


def error_rate_per_minute(rows: list[list[Any]], published: Published) -> None:
    assert [minute_of(row[0]) for row in rows] == [published.first_minute + timedelta(minutes=m) for m in range(4)]
    assert [row[1:] for row in rows] == [[6, 0.1667], [0, 0], [0, 0], [4, 0.25]]


def thumbs_down_rate(rows: list[list[Any]], published: Published) -> None:
    assert rows == [["readme-lora", "v2", 4, 0.75], [None, "v1", 4, 0.25]]


def dead_letters_by_reason(rows: list[list[Any]], published: Published) -> None:
    topics = published.worker.settings.topics
    assert [row[:3] for row in rows] == [[topics.inference, "not_json", 3], [topics.feedback, "empty", 2]]
    assert all(row[3] for row in rows), "each reason comes with an example"


def tokens_per_cohort(rows: list[list[Any]], published: Published) -> None:
    a, b = published.events[0], published.events[-1]
    expected = [[a.timestamp.date().isoformat(), "pro", "en", 60, 100, 3],
                [b.timestamp.date().isoformat(), "free", "de", 20, 150, 1]]
    expected.sort(key=lambda row: (row[0], row[4]), reverse=True)
    assert [[str(row[0]), *row[1:]] for row in rows] == expected


def worst_disparities(rows: list[list[Any]], published: Published) -> None:
    assert rows == [["readme-a", "", "bias.toxic_rate.gap", "cohort", "free", "pro", 0.35],
                    ["readme-a", "", "bias.refusal_rate.gap", "language", "de", "en", 0.1]]


def complete_windows_only(rows: list[list[Any]], published: Published) -> None:
    hour = published.first_minute.replace(minute=0)
    assert [[minute_of(row[0]), *row[1:]] for row in rows] == [[hour - timedelta(hours=1), "readme-a", "", 123.0]]


def cost_per_user(rows: list[list[Any]], published: Published) -> None:
    requests = {row[1]: row[3] for row in rows}
    assert requests == {"u-0": 2, "u-1": 2, "u-2": 2, "u-9": 4}
    assert all(0 <= row[4] <= row[3] for row in rows), "unpriced requests are a share of the requests"


def training_runs(rows: list[list[Any]], published: Published) -> None:
    assert [row[:5] for row in rows] == [["readme-run", "readme-a", "succeeded", 40, "passed the gate"]]


def deployer_history(rows: list[list[Any]], published: Published) -> None:
    assert [row[1:5] for row in rows] == [["canary", "succeeded", "readme-lora", 10.0]]
    assert rows[0][5] == {"readme-a": 90.0, "readme-lora": 10.0}


CHECKS = {
    "FROM deployments FINAL WHERE actor = 'deployer'": deployer_history,
    "name = 'latency_p99_ms' AND window_seconds = 60": complete_windows_only,
    "sum(cost_total)": cost_per_user,
    "FROM training_runs": training_runs,
    "quantiles(0.5, 0.95, 0.99)(latency_ms)": latency_per_model,
    "AS error_rate": error_rate_per_minute,
    "AS thumbs_down_rate": thumbs_down_rate,
    "FROM dead_letters": dead_letters_by_reason,
    "sum(completion_tokens)": tokens_per_cohort,
    "'bias.%.gap'": worst_disparities,
}
"""What each README query must return for `published`; a query added to the README needs a check here."""


@pytest.mark.parametrize("sql", blocks("sql"), ids=lambda sql: sql.split("\n")[0][:40])
def test_the_queries_return_what_was_published(published: Published, sql: str) -> None:
    checks = [check for marker, check in CHECKS.items() if marker in sql]
    assert len(checks) == 1, f"give this README query one check in CHECKS:\n{sql}"
    checks[0](published.worker.sql(sql), published)

"""A plain worker reports its own consumer lag per partition (of those it has read from) as `resources`
points, and scrapes no vLLM."""

from __future__ import annotations

import pytest

from schemas import InferenceEvent
from tests.integration.conftest import Worker, wait_until

pytestmark = pytest.mark.integration


def test_a_worker_publishes_its_lag_per_partition(worker: Worker) -> None:
    topics = worker.settings.topics
    with worker.publisher() as publisher:
        for i in range(8):
            publisher.publish(InferenceEvent(request_id=f"lag-{i}", model="m", prompt="p", latency_ms=1))
    lag = "SELECT labels['topic'], labels['partition'], value FROM metric_points WHERE name = 'worker.lag'"
    points = wait_until(lambda: (found := worker.sql(lag)) and topics.inference in {t for t, _, _ in found} and found,
                        120, "worker.lag points of the inference topic")
    assert {topic for topic, _, _ in points} <= {topics.inference, topics.feedback, topics.metrics, topics.alerts,
                                                 topics.silences, topics.training, topics.models, topics.audit,
                                                 topics.deployments}
    assert all(partition.isdigit() and value >= 0 for _, partition, value in points)
    assert worker.count("SELECT count() FROM metric_points WHERE name LIKE 'vllm.%'") == 0

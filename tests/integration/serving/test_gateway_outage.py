"""Kafka goes away: requests still succeed, events wait in the spool (across a gateway restart), and
every one of them reaches ClickHouse exactly once when Kafka returns."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics
from streams.settings import Settings
from tests.integration.conftest import Worker, free_port, wait_until
from tests.integration.serving.conftest import BASE_MODEL, CLIENT_KEY, Gateway, topics_for

pytestmark = pytest.mark.integration


def metric(gateway: Gateway, name: str) -> int:
    """A metric's value summed over its labels."""
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", gateway.metrics(), flags=re.M)
    return int(sum(float(value) for value in values))


def spool_events(gateway: Gateway) -> int:
    return metric(gateway, "llmwatch_gateway_spool_events")


def ask(gateway: Gateway, n: int) -> list[str]:
    """Chat, streamed chat and completion requests in turn; returns their request ids."""
    client, ids = gateway.client(), []
    for i in range(n):
        if i % 3 == 0:
            ids.append(client.chat.completions.create(
                model=BASE_MODEL, messages=[{"role": "user", "content": f"Say {i}"}], max_tokens=3).id)
        elif i % 3 == 1:
            chunks = list(client.chat.completions.create(
                model=BASE_MODEL, messages=[{"role": "user", "content": f"Say {i}"}], max_tokens=3, stream=True))
            ids.append(chunks[0].id)
        else:
            ids.append(client.completions.create(model=BASE_MODEL, prompt=f"Number {i}:", max_tokens=3).id)
    return ids


def test_events_spool_while_kafka_is_down_and_arrive_exactly_once(
        make_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    broker = EmbeddedBroker(free_port(), log_file=tmp_path / "broker.log")
    broker.start()
    topics = topics_for(run)
    settings = Settings(data_dir=tmp_path / "worker", kafka_bootstrap_servers=broker.bootstrap_servers, topics=topics,
                        app_id=f"llmwatch-outage-{run}", web_port=free_port(), ingest_flush_seconds=0.2,
                        _env_file=None)
    ensure_topics(broker.bootstrap_servers, topics)
    gateway = make_gateway(settings).start()
    worker = None
    try:
        ask(gateway, 1)
        wait_until(lambda: metric(gateway, "llmwatch_gateway_events_published_total") == 1, 30,
                   "the first event to be published")

        broker.stop()
        during = ask(gateway, 4)
        feedback = gateway.request("POST", "/v1/feedback", key=CLIENT_KEY,
                                   json={"request_id": during[0], "thumbs": "up"})
        assert feedback.status_code == 202
        wait_until(lambda: spool_events(gateway) == 5, 60, "5 events in the spool")

        assert gateway.stop() == 0
        gateway.start()
        assert gateway.health()["events"]["spool_events"] == 5, "the spool did not survive the restart"
        during += ask(gateway, 2)
        wait_until(lambda: spool_events(gateway) == 7, 60, "7 events in the spool")

        broker.start()  # memory only: a new, empty broker on the same address
        ensure_topics(broker.bootstrap_servers, topics)
        wait_until(lambda: spool_events(gateway) == 0, 60, "the spool to be replayed")
        assert gateway.health()["events"]["kafka"] == "connected"

        worker = Worker(settings, tmp_path / "worker.log").start()
        ids = ",".join(f"'{request_id}'" for request_id in during)
        wait_until(lambda: worker.count(f"SELECT count() FROM inference_events WHERE request_id IN ({ids})")
                   == len(during), 120, f"{len(during)} inference rows")
        wait_until(lambda: worker.count("SELECT count() FROM feedback_events") == 1, 60, "the feedback row")
        per_request = dict(worker.sql(f"SELECT request_id, count() FROM inference_events WHERE request_id IN ({ids}) "
                                      "GROUP BY request_id"))
        assert per_request == dict.fromkeys(during, 1)
        assert worker.count(f"SELECT uniqExact(event_id) FROM inference_events WHERE request_id IN ({ids})") == len(
            during)
        assert "llmwatch_gateway_publish_errors_total 0.0" not in gateway.metrics()
    finally:
        if worker is not None and worker.process is not None:
            worker.stop()
        if gateway.process is not None:
            gateway.stop()
        broker.stop()

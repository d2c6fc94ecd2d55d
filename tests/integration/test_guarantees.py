"""The README's guarantees, tried the way outside producers and users meet them.

Producers here are librdkafka (confluent-kafka), not our SDK: what a Go or Java app would send, with and
without `event_id`. Rows are counted by request id, not only by event id, since a duplicate that got a
second id is exactly what FINAL cannot collapse.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from llmwatch.traffic import inference_event
from schemas.topics import model_key
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics
from streams.settings import Settings, Topics
from tests.integration.conftest import Worker, free_port, to_env, wait_until

pytestmark = pytest.mark.integration


def produce(settings: Settings, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Publish with librdkafka (acks=all); returns how many the broker acknowledged."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all", "linger.ms": 5,
                         "client.id": "guarantees-test"})
    delivered, failed = [0], []

    def on_delivery(error: object, _: object) -> None:
        if error is None:
            delivered[0] += 1
        else:
            failed.append(error)

    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0, "librdkafka could not deliver everything"
    assert not failed, failed[:3]
    return delivered[0]


def sql_cli(settings: Settings, sql: str) -> list[list[str]]:
    """`llmwatch sql` in a process of its own: the test process must not open a worker's chdb store itself."""
    result = subprocess.run([sys.executable, "-m", "llmwatch", "sql", "--format", "csv", sql], capture_output=True,
                            text=True, env=os.environ | to_env(settings), timeout=120)
    assert result.returncode == 0, result.stderr
    return [line.split(",") for line in result.stdout.splitlines()[1:]]


def own_stack(tmp_path: Path) -> tuple[EmbeddedBroker, Settings]:
    """A broker of its own (to stop and start) and a worker's settings against it."""
    run = uuid.uuid4().hex[:8]
    broker = EmbeddedBroker(free_port(), log_file=tmp_path / "broker.log")
    broker.start()
    topics = Topics(**{name: f"{run}.{topic}" for name, topic in Topics().model_dump().items()
                       if isinstance(topic, str)})
    settings = Settings(data_dir=tmp_path / "worker", kafka_bootstrap_servers=broker.bootstrap_servers,
                        topics=topics, app_id=f"llmwatch-guarantees-{run}", web_port=free_port(),
                        ingest_flush_seconds=0.2, _env_file=None)
    ensure_topics(broker.bootstrap_servers, topics)
    return broker, settings


N = 20_000


def test_a_worker_killed_mid_stream_stores_each_request_once_whether_or_not_producers_send_ids(
        make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(ingest_batch_size=500)
    rng = random.Random(9)
    messages = []
    for n in range(N):
        event = json.loads(inference_event(rng).model_dump_json())
        if n % 2:  # half of them leave event_id out, and some of those the timestamp too
            del event["event_id"]
            if n % 4 == 1:
                del event["timestamp"]
        messages.append((model_key(event["model"], event["adapter"]).encode(), json.dumps(event).encode()))
    assert produce(worker.settings, worker.settings.topics.inference, messages) == N

    worker.start()
    wait_until(lambda: worker.count("SELECT count() FROM inference_events") >= N // 20, 120, "some rows")
    assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
    stored_at_kill = int(sql_cli(worker.settings, "SELECT count() FROM inference_events")[0][0])
    worker.start()
    wait_until(lambda: worker.health()["ingest"].get("inference_events", {}).get("received", 0) +
               stored_at_kill >= N, 240, "the rest of the topic to be read")
    wait_until(lambda: worker.count("SELECT uniqExact(request_id) FROM inference_events") == N, 240,
               f"{N} request ids after the restart")

    received_after = worker.health()["ingest"]["inference_events"]["received"]
    assert stored_at_kill + received_after > N, "the kill landed on a commit: nothing was replayed, nothing tested"
    assert worker.count("SELECT count() FROM inference_events") == N  # what a reader sees (FINAL)
    # Below FINAL: every stored copy of a request carries one id, so a replay can never show twice.
    assert worker.sql("SELECT request_id, uniqExact(event_id) AS ids FROM inference_events GROUP BY request_id "
                      "HAVING ids > 1 LIMIT 5 SETTINGS final = 0") == []
    assert worker.count("SELECT count() FROM inference_events WHERE event_id = "
                        "toUUID('00000000-0000-0000-0000-000000000000')") == 0
    worker.stop()


def test_new_poison_at_an_offset_reused_after_a_broker_restart_keeps_the_old_dead_letter(tmp_path: Path) -> None:
    broker, settings = own_stack(tmp_path)
    worker = Worker(settings, tmp_path / "worker.log")
    poison = b'{"request_id": "poison", "model": "m", "prompt": "hi", "latency_ms": "slow"}'
    valid_without_id = b'{"request_id": "no-id", "model": "m", "prompt": "hi", "latency_ms": 3}'
    topic = settings.topics.inference
    try:
        worker.start()
        produce(settings, topic, [(b"m", poison), (b"m", valid_without_id)])
        wait_until(lambda: worker.count("SELECT count() FROM dead_letters") == 1 and
                   worker.count("SELECT count() FROM inference_events") == 1, 60, "the first poison and event")
        worker.stop()
        broker.stop()
        broker.start()  # memory storage: empty, offsets start again at 0
        ensure_topics(broker.bootstrap_servers, settings.topics)
        worker.start()
        produce(settings, topic, [(b"m", poison), (b"m", valid_without_id)])  # the very same bytes again
        wait_until(lambda: worker.count("SELECT count() FROM dead_letters") == 2, 60, "the second dead letter")
        wait_until(lambda: worker.count("SELECT count() FROM inference_events") == 2, 60, "the second event")
        letters = worker.sql("SELECT origin_partition, origin_offset, reason, raw FROM dead_letters")
        assert letters[0] == letters[1], "both poison messages sat at the same place: the collision was tested"
        assert letters[0][2] == "invalid_fields"
        assert worker.count("SELECT uniqExact(event_id) FROM inference_events WHERE request_id = 'no-id'") == 2
    finally:
        if worker.process is not None:
            worker.stop()
        broker.stop()

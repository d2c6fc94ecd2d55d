"""The gateway's sink when Kafka takes only part of a batch: what is replayed from the spool, and in what order.

Driven in-process against the real broker (no vLLM needed). A record larger than Kafka accepts
(`max_request_size`, 1 MB) in the middle of a batch is what makes the acknowledgement partial here, every
time: the records before it are taken, it and the ones after are not. A chat with a long pasted document
that vLLM refuses (too long for the model) still becomes an event with the whole prompt, so this happens.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from schemas.events import InferenceEvent
from schemas.topics import Topics
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.recording import Exchange
from serving.gateway.redaction import Redactor
from serving.gateway.sink import EventSink
from serving.gateway.spool import Spool
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics
from tests.integration.serving.conftest import topics_for

pytestmark = pytest.mark.integration


def exchange(n: int, content: str = "hi") -> Exchange:
    now = datetime.now(UTC)
    return Exchange(request_id=f"order-{n:03d}", endpoint="chat", started_at=now, model="m", adapter=None,
                    requested_model="m", stream=False, messages=[{"role": "user", "content": content}],
                    response_text="ok", latency_s=0.05, completed_at=now, status="error" if len(content) > 2 else "ok")


async def run_sink(broker: EmbeddedBroker, topics: Topics, spool_dir: Path, items: list[Exchange]) -> dict:
    sink = EventSink(bootstrap_servers=broker.bootstrap_servers, topics=topics, spool=Spool(spool_dir, 64 << 20),
                     redactor=Redactor([]), metrics=GatewayMetrics(), publish_timeout=2.0, max_backoff=0.5,
                     queue_max=10_000)
    await sink.start()
    for item in items:
        sink.submit(item)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    await asyncio.sleep(1)
    while (sink.status()["spool_events"] or sink.status()["queued_events"]) and loop.time() < deadline:
        await asyncio.sleep(0.2)
    status = sink.status()
    await sink.stop()
    sink.spool.close()
    return status


def request_ids(broker: EmbeddedBroker, topic: str) -> list[str]:
    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000, session_timeout_ms=6000, heartbeat_interval_ms=1000,
                             group_id=f"read-{uuid.uuid4().hex[:6]}")
    ids = [InferenceEvent.model_validate_json(message.value).request_id for message in consumer]
    consumer.close()
    return ids


def test_a_partly_acknowledged_batch_is_replayed_in_order_and_the_spool_drains(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    topics = topics_for(uuid.uuid4().hex[:8])
    ensure_topics(broker.bootstrap_servers, topics)
    items = [exchange(n) for n in range(10)] + [exchange(10, "x" * 1_500_000)] + [exchange(n) for n in range(11, 20)]
    status = asyncio.run(run_sink(broker, topics, tmp_path / "spool", items))
    seen = request_ids(broker, topics.inference)
    first_seen = list(dict.fromkeys(seen))
    wanted = [item.request_id for item in items if item.request_id != "order-010"]
    assert [rid for rid in first_seen if rid != "order-010"] == wanted, "events arrived out of order, or not at all"
    assert status["spool_events"] == 0, "the spool never drained"

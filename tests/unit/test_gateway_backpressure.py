"""The gateway's event queue pushes back on new requests instead of dropping events (no broker: the publisher's
task is not started, batches are taken by hand)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from schemas.events import FeedbackEvent
from schemas.topics import Topics
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.redaction import Redactor
from serving.gateway.sink import EventSink
from serving.gateway.spool import Spool


def sink(tmp_path: Path, queue_max: int, room_wait: float) -> EventSink:
    return EventSink(bootstrap_servers="127.0.0.1:1", topics=Topics(), spool=Spool(tmp_path / "spool", 2**20),
                     redactor=Redactor.from_settings([], {}), metrics=GatewayMetrics(), publish_timeout=5,
                     max_backoff=0.5, queue_max=queue_max, room_wait=room_wait)


def feedback() -> FeedbackEvent:
    return FeedbackEvent(request_id="r", thumbs="up")


def test_a_request_waits_while_the_queue_is_full_until_the_publisher_takes_a_batch(tmp_path: Path) -> None:
    events = sink(tmp_path, queue_max=3, room_wait=30)

    async def scenario() -> None:
        await events.room()  # not full: no wait
        for _ in range(3):
            events.submit(feedback())
        waiting = asyncio.create_task(events.room())
        await asyncio.sleep(0.1)
        assert not waiting.done()
        assert len(await events._take()) == 3
        await asyncio.wait_for(waiting, 5)

    asyncio.run(scenario())
    assert events.metrics.registry.get_sample_value("llmwatch_gateway_backpressure_waits_total") == 1
    assert events.metrics.registry.get_sample_value("llmwatch_gateway_events_dropped_total",
                                                    {"reason": "queue_full"}) is None


def test_the_wait_is_bounded_and_events_drop_only_past_twice_the_queue(tmp_path: Path) -> None:
    events = sink(tmp_path, queue_max=3, room_wait=0.05)

    async def scenario() -> None:
        for _ in range(6):
            events.submit(feedback())
        await asyncio.wait_for(events.room(), 5)  # a stuck publisher never stops the serving
        events.submit(feedback())

    asyncio.run(scenario())
    assert events.metrics.registry.get_sample_value("llmwatch_gateway_events_dropped_total",
                                                    {"reason": "queue_full"}) == 1

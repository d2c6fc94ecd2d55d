"""The event sink with Kafka unreachable and a small spool: it spools, then says loudly that it drops,
and `submit` (what a request handler calls) never waits. Real spool on disk, a real closed port."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from serving.gateway.metrics import GatewayMetrics
from serving.gateway.recording import Exchange
from serving.gateway.redaction import Redactor
from serving.gateway.sink import EventSink
from serving.gateway.spool import Spool
from streams.settings import Topics
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration


def exchange(n: int) -> Exchange:
    return Exchange(request_id=f"r{n}", endpoint="chat", started_at=datetime.now(UTC), model="smollm2-135m",
                    adapter=None, requested_model=None, stream=False,
                    messages=[{"role": "user", "content": "x" * 2000}], response_text="y" * 2000, latency_s=0.1)


def test_a_full_spool_drops_loudly_and_never_blocks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    metrics = GatewayMetrics()
    spool = Spool(tmp_path, max_bytes=2**16)

    def sample(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    async def scenario() -> tuple[int, dict[str, object]]:
        sink = EventSink(bootstrap_servers=f"127.0.0.1:{free_port()}", topics=Topics(), spool=spool,
                         redactor=Redactor.from_settings([], {}), metrics=metrics, publish_timeout=0.5,
                         max_backoff=0.5, queue_max=1000)
        await sink.start()
        for n in range(100):
            sink.submit(exchange(n))
        queued = sink.status()["queued_events"]  # nothing ran in between: submit only queues
        for _ in range(300):
            if sample("llmwatch_gateway_events_spooled_total") + sample(
                    "llmwatch_gateway_events_dropped_total", reason="spool_full") == 100:
                break
            await asyncio.sleep(0.1)
        status = sink.status()
        await sink.stop()
        return queued, status

    with caplog.at_level(logging.ERROR, logger="serving.gateway.sink"):
        queued, status = asyncio.run(scenario())
    spooled = sample("llmwatch_gateway_events_spooled_total")
    dropped = sample("llmwatch_gateway_events_dropped_total", reason="spool_full")
    assert queued == 100
    assert status["spool_full"] is True and status["kafka"] == "disconnected"
    assert spooled > 0 and dropped > 0 and spooled + dropped == 100
    assert spool.pending == spooled
    assert sample("llmwatch_gateway_spool_full") == 1
    assert "SPOOL FULL" in caplog.text
    spool.close()

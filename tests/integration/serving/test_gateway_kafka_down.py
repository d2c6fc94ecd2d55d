"""While Kafka is down, requests through the gateway never wait for it: the gateway's own share of each
answer stays far below the time it gives Kafka before spooling."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics
from streams.settings import Settings
from tests.integration.conftest import free_port, wait_until
from tests.integration.serving.conftest import BASE_MODEL, Gateway, topics_for

pytestmark = pytest.mark.integration

PUBLISH_TIMEOUT = 4.0


def gateway_ms(gateway: Gateway, content: str) -> float:
    """The gateway's own time for one non-streamed chat (Server-Timing: total minus vLLM's part)."""
    response = gateway.request("POST", "/v1/chat/completions", json={
        "model": BASE_MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": content}]})
    assert response.status_code == 200, response.text
    match = re.search(r"gateway;dur=([\d.]+)", response.headers["Server-Timing"])
    assert match, response.headers["Server-Timing"]
    return float(match[1])


def test_requests_do_not_wait_for_kafka_while_it_is_down(make_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    broker = EmbeddedBroker(free_port(), log_file=tmp_path / "broker.log")
    broker.start()
    topics = topics_for(uuid.uuid4().hex[:8])
    ensure_topics(broker.bootstrap_servers, topics)
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers, topics=topics,
                        _env_file=None)
    gateway = make_gateway(settings, publish_timeout_seconds=PUBLISH_TIMEOUT).start()
    try:
        up = [gateway_ms(gateway, f"Say {n}") for n in range(2)]
        broker.stop()
        down = [gateway_ms(gateway, f"Say {n} again") for n in range(8)]  # the first while it finds out
        wait_until(lambda: gateway.health()["events"]["spool_events"] >= 8, 60, "the events to be spooled")
        assert gateway.health()["events"]["kafka"] == "disconnected"
        print(f"gateway's own time per request, ms: Kafka up {up}, Kafka down {down}")
        assert max(down) < PUBLISH_TIMEOUT * 1000 / 4, (
            f"a request waited for Kafka: the gateway's own time was {max(down):.0f} ms while Kafka was down "
            f"(it waits {PUBLISH_TIMEOUT:g} s for Kafka before spooling); with Kafka up: {max(up):.0f} ms")
    finally:
        if gateway.process is not None:
            gateway.stop()
        broker.stop()

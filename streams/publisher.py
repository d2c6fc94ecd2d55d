"""The SDK apps call to publish inference and feedback events (kafka-python, acks=all).

    from streams.publisher import Publisher
    from schemas import InferenceEvent

    with Publisher("localhost:19092") as publisher:
        publisher.publish(InferenceEvent(request_id="r1", model="smollm2", prompt="Hi", latency_ms=41.0))
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from schemas.errors import BrokerError
from schemas.events import Event
from schemas.topics import Topics, destination
from streams.settings import Settings


class Publisher:
    """Validates by construction (events are pydantic models) and keys them as the processors expect."""

    def __init__(self, bootstrap_servers: str, *, topics: Topics | None = None, **producer_config: Any) -> None:
        self.topics = topics or Topics()
        config = {"acks": "all", "linger_ms": 5, "retries": 5, "client_id": "llmwatch-publisher"} | producer_config
        try:
            self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), **config)
        except KafkaError as exc:
            raise BrokerError(f"cannot reach Kafka at {bootstrap_servers}: {exc}. Is `llmwatch up` running?") from exc

    @classmethod
    def from_settings(cls, settings: Settings, **producer_config: Any) -> Publisher:
        return cls(settings.bootstrap_servers, topics=settings.topics, **producer_config)

    def publish(self, event: Event) -> FutureRecordMetadata:
        """Send without waiting; call flush() (or leave the `with` block) to wait for the broker.

        Apps publish inference and feedback events; llmwatch's own tools publish the other kinds the same way.
        """
        topic, key = destination(event, self.topics)
        return self._producer.send(topic, value=event.model_dump_json().encode(), key=key)

    def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> FutureRecordMetadata:
        """Bytes as they are: for bridges from other producers (and for testing what the worker rejects)."""
        return self._producer.send(topic, value=value, key=key)

    def flush(self, timeout: float | None = 30.0) -> None:
        self._producer.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        self._producer.close(timeout)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["Publisher"]

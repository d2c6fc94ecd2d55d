"""The SDK apps call to publish inference and feedback events (kafka-python, acks=all).

    from streams.publisher import Publisher
    from schemas import InferenceEvent

    with Publisher("localhost:19092") as publisher:
        publisher.publish(InferenceEvent(request_id="r1", model="smollm2", prompt="Hi", latency_ms=41.0))

When Kafka is down or slow it neither hangs the app nor loses events quietly. `publish` never waits for
an ack, and waits for Kafka itself at most `timeout_seconds` (5 s: reaching it at start, metadata for
a topic's first event, room in a full buffer), then raises `BrokerError`: the event was not taken. An
event taken but not acknowledged within `delivery_timeout_seconds` (30 s; Kafka went away after) is
logged as an ERROR and makes the next `flush()` (or the end of the `with` block) raise `BrokerError`
with its id; those two wait at most that long. The SDK keeps no spool of its own (the gateway does): an
app that must not lose an event publishes it again, or keeps it, when told.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from schemas.errors import BrokerError
from schemas.events import Event
from schemas.topics import Topics, destination
from streams.settings import Settings

log = logging.getLogger(__name__)


class Publisher:
    """Validates by construction (events are pydantic models) and keys them as the processors expect."""

    def __init__(self, bootstrap_servers: str, *, topics: Topics | None = None, timeout_seconds: float = 5.0,
                 delivery_timeout_seconds: float = 30.0, **producer_config: Any) -> None:
        self.topics = topics or Topics()
        self.bootstrap_servers = bootstrap_servers
        self.timeout_seconds = timeout_seconds
        wait_ms = int(timeout_seconds * 1000)
        config = {
            "acks": "all", "linger_ms": 5, "client_id": "llmwatch-publisher",
            "bootstrap_timeout_ms": wait_ms, "max_block_ms": wait_ms, "request_timeout_ms": wait_ms,
            "delivery_timeout_ms": max(int(delivery_timeout_seconds * 1000), wait_ms + 5),
            "reconnect_backoff_max_ms": 1000,
        } | producer_config
        self._undelivered: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        try:
            self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), **config)
        except KafkaError as exc:
            raise BrokerError(f"cannot reach Kafka at {bootstrap_servers} within {timeout_seconds:g} s: {exc}. "
                              "Is `llmwatch up` running?") from exc

    @classmethod
    def from_settings(cls, settings: Settings, **producer_config: Any) -> Publisher:
        return cls(settings.bootstrap_servers, topics=settings.topics,
                   timeout_seconds=settings.publish_timeout_seconds, **producer_config)

    def publish(self, event: Event) -> FutureRecordMetadata:
        """Send without waiting for the ack; raises BrokerError at once if Kafka cannot take the event.

        Apps publish inference and feedback events; llmwatch's own tools publish the other kinds the same way.
        """
        topic, key = destination(event, self.topics)
        return self._send(topic, event.model_dump_json().encode(), key, str(event.event_id))

    def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> FutureRecordMetadata:
        """Bytes as they are: for bridges from other producers (and for testing what the worker rejects)."""
        return self._send(topic, value, key, f"{topic} message")

    def _send(self, topic: str, value: bytes, key: bytes | None, what: str) -> FutureRecordMetadata:
        try:
            future = self._producer.send(topic, value=value, key=key)
        except KafkaError as exc:
            raise BrokerError(f"{what} was not published: Kafka at {self.bootstrap_servers} could not take it "
                              f"within {self.timeout_seconds:g} s ({exc}); nothing was kept, publish it again "
                              "once Kafka is back") from exc
        future.add_errback(self._undelivered_event, what)
        return future

    def _undelivered_event(self, what: str, exc: BaseException) -> None:
        log.error("%s was not delivered to Kafka at %s: %s", what, self.bootstrap_servers, exc)
        with self._lock:
            self._undelivered.append((what, str(exc)))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every event sent is acknowledged or has failed (at most `delivery_timeout_seconds`);
        raises BrokerError naming the events Kafka did not acknowledge since the last flush."""
        try:
            self._producer.flush(timeout)
        except KafkaError as exc:
            raise BrokerError(f"Kafka at {self.bootstrap_servers} did not acknowledge every event in time: "
                              f"{exc}") from exc
        with self._lock:
            failed, self._undelivered = self._undelivered, []
        if failed:
            shown = ", ".join(what for what, _ in failed[:5]) + (", ..." if len(failed) > 5 else "")
            raise BrokerError(f"{len(failed)} events were not delivered to Kafka at {self.bootstrap_servers} "
                              f"({shown}): {failed[0][1]}. They are kept nowhere else: publish them again")

    def close(self) -> None:
        """Flush (raising for what was not delivered), then close; bounded like `flush`."""
        try:
            self.flush()
        finally:
            try:
                self._producer.close(0)
            except KafkaError as exc:  # records still pending after a failed flush: nothing more to wait for
                log.debug("closing the Kafka producer: %r", exc)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        try:  # an error is already on its way out: say what else failed, do not hide it
            self.close()
        except BrokerError as undelivered:
            log.error("%s", undelivered)


__all__ = ["Publisher"]

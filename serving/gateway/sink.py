"""Events off the request path: an in-memory queue, drained by one task into Kafka or the on-disk spool.

Request handlers call `submit`, which never waits. One background task has the events built, bounded and
redacted in a worker thread (never on the event loop that serves requests), publishes them with
aiokafka (acks=all; keyed as `streams.publisher.Publisher` keys them), and sends whatever Kafka did not
acknowledge within `publish_timeout_seconds` to the spool. While the spool holds anything, new events
join it behind the old ones, and the same task replays it, oldest first, with backoff, until Kafka is
back; so events reach Kafka in the order they were spooled. One task does all
of it, so there is no race between publishing, spooling and replaying.

Delivery is at least once: a timeout can resend an event Kafka had in fact taken; the store collapses
duplicates by `event_id`. On shutdown the queue is flushed (to Kafka, or to the spool) and the spool is
kept for the next start. Events are lost only when the spool is full, and then loudly (log and metric).

A record Kafka refuses for a reason that retrying cannot fix (too large, a corrupt or invalid record) is
set aside (`SetAside`, with a log line and `llmwatch_gateway_events_refused_total`) and the queue moves
on: one poison record must not stop every event behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from pydantic import ValidationError

from schemas.events import AuditEvent, DeploymentEvent, FeedbackEvent, InferenceEvent
from schemas.topics import Topics, destination
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.recording import DEFAULT_RULES, Exchange, Rules, inference_event, redacted_feedback
from serving.gateway.redaction import Redactor
from serving.gateway.spool import Record, SetAside, Spool

log = logging.getLogger(__name__)

_STOP = object()
_REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordListTooLargeError, CorruptRecordException, InvalidTopicError)
"""Kafka's answers about a record itself: sending it again gets the same answer."""
_KAFKA_MAX_REQUEST = 1_048_576
_BATCH = 500
_GATHER_SECONDS = 0.05
"""Events wait this long for others to travel with them: one produce request and one ack per batch, not per
event, so the publisher wakes (and takes a core from vLLM) less often; it costs nothing on the request path."""


class _LossReport:
    """Losses are logged at once, then at most every `every` seconds with the count since: loud, not a flood."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._unreported = 0
        self._last = -every

    def add(self, lost: int) -> int:
        """Count a loss; returns how many to report now (0: stay quiet for the moment)."""
        self._unreported += lost
        if time.monotonic() - self._last < self.every:
            return 0
        self._last, reported, self._unreported = time.monotonic(), self._unreported, 0
        return reported


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a late failure as seen: it was already handled as a timeout (the record went to the spool)."""
    if not future.cancelled():
        future.exception()


class EventSink:
    def __init__(self, *, bootstrap_servers: str, topics: Topics, spool: Spool, redactor: Redactor,
                 metrics: GatewayMetrics, publish_timeout: float, max_backoff: float, queue_max: int,
                 room_wait: float = 1.0, rules: Rules = DEFAULT_RULES) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.rules = rules
        self.set_aside = SetAside(spool.directory / "refused.jsonl", max(2**20, spool.max_bytes // 4))
        self.topics = topics
        self.spool = spool
        self.redactor = redactor
        self.metrics = metrics
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self.queue_max = queue_max
        self.room_wait = room_wait
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()
        self._producer: AIOKafkaProducer | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._task: asyncio.Task[None] | None = None
        self._spool_full = False
        self._queue_losses = _LossReport()
        self._spool_losses = _LossReport()
        self._update_gauges()

    async def room(self) -> None:
        """Backpressure, awaited before a request goes upstream: while the queue is full, wait (at most
        `room_wait` seconds) for the publisher to take a batch. A gateway whose CPU is saturated otherwise answers
        faster than it can build and publish events, and the queue overflows; waiting here gives the publisher its
        turn, so answers slow down to what can be recorded instead of events being dropped. The wait is bounded so
        that a publisher that is stuck (a spool on a disk that does not keep up) never stops the serving."""
        if self._queue.qsize() < self.queue_max:
            return
        self._room.clear()
        self.metrics.backpressure.inc()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), self.room_wait)

    def submit(self, item: Exchange | FeedbackEvent | AuditEvent | DeploymentEvent) -> None:
        """Hand an event over without waiting. Requests wait for `room` before they start, so the queue exceeds
        `queue_max` only by the requests already under way; past twice that, count and log the loss."""
        if self._queue.qsize() >= 2 * self.queue_max:
            self.metrics.dropped.labels("queue_full").inc()
            if lost := self._queue_losses.add(1):
                log.error("QUEUE FULL: %d events dropped: %d events already wait to be published (is the disk "
                          "too slow for the spool?)", lost, 2 * self.queue_max)
            return
        self._queue.put_nowait(item)
        self.metrics.queue_depth.set(self._queue.qsize())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="llmwatch-event-sink")

    async def stop(self) -> None:
        """Flush the queue to Kafka or the spool, then close the producer; the spool stays for next time."""
        if self._task is None:
            return
        self._queue.put_nowait(_STOP)
        try:
            await asyncio.wait_for(self._task, 3 * self.publish_timeout + 5)
        except TimeoutError:
            log.error("the event publisher did not stop in time; spooling what is left")
            self._spool_leftovers()
        await self._close_producer()
        self._task = None

    def status(self) -> dict[str, Any]:
        return {
            "kafka": "connected" if self._producer is not None else "disconnected",
            "queued_events": self._queue.qsize(),
            "spool_events": self.spool.pending,
            "spool_bytes": self.spool.size_bytes,
            "spool_full": self._spool_full,
        }

    async def _run(self) -> None:
        await self._connect()
        stopping = False
        while not stopping:
            items = await self._take()
            stopping = any(item is _STOP for item in items)
            # In a thread: building, redacting and encoding a large event must not hold the requests' loop.
            records = await asyncio.to_thread(self._encode_all, items)
            try:
                # When stopping, publish directly only over a live connection: no waiting to reconnect.
                await self._publish(records, direct=not stopping or self._producer is not None)
            except Exception:
                log.exception("unexpected error while publishing events; they go to the spool")
                await self._to_spool(records)
            if not stopping and self.spool.pending and time.monotonic() >= self._retry_at:
                try:
                    await self._replay()
                except Exception as exc:
                    log.exception("unexpected error while replaying the spool")
                    self._failed(f"replaying the spool failed: {exc!r}")
            self._update_gauges()

    async def _take(self) -> list[Any]:
        """What is queued: wait for something unless the spool has a replay due sooner."""
        timeout = max(0.0, self._retry_at - time.monotonic()) if self.spool.pending else None
        try:
            first = self._queue.get_nowait() if timeout == 0 else await asyncio.wait_for(self._queue.get(), timeout)
        except (TimeoutError, asyncio.QueueEmpty):
            return []
        items = [first]
        stopping = first is _STOP
        if not stopping and self._queue.qsize() < _BATCH:
            await asyncio.sleep(_GATHER_SECONDS)
        while not self._queue.empty() and (stopping or len(items) < _BATCH):  # after a stop: everything
            items.append(item := self._queue.get_nowait())
            stopping = stopping or item is _STOP
        if self._queue.qsize() < self.queue_max:
            self._room.set()
        return items

    def _encode_all(self, items: list[Any]) -> list[Record]:
        return [record for record in map(self._encode, items) if record is not None]

    def _encode(self, item: Any) -> Record | None:
        if item is _STOP:
            return None
        try:
            event: InferenceEvent | FeedbackEvent | AuditEvent | DeploymentEvent
            if isinstance(item, AuditEvent | DeploymentEvent):  # built by the gateway: nothing to redact
                event = item
            elif isinstance(item, Exchange):
                event = inference_event(item, self.redactor, self.rules)
                for kind, tokens in (("prompt", event.prompt_tokens), ("completion", event.completion_tokens)):
                    if tokens:
                        self.metrics.tokens.labels(kind).inc(tokens)
                if event.truncated:
                    self.metrics.truncated.inc()
            else:
                event = redacted_feedback(item, self.redactor, self.rules)
            topic, key = destination(event, self.topics)
            record = Record(topic, key, event.model_dump_json().encode())
            if len(record.value) > self.rules.max_event_bytes:
                self._refuse(record, f"{len(record.value)} bytes, over LLMWATCH_MAX_EVENT_BYTES="
                                     f"{self.rules.max_event_bytes}", "too_large")
                return None
            return record
        except ValidationError as exc:
            self.metrics.dropped.labels("invalid").inc()
            log.error("event for request %s dropped, it is not valid (a gateway bug, please report it): %s",
                      getattr(item, "request_id", "?"), exc)
        except Exception:
            self.metrics.dropped.labels("invalid").inc()
            log.exception("event for request %s dropped: building it failed (a gateway bug, please report it)",
                          getattr(item, "request_id", "?"))
        return None

    async def _publish(self, records: list[Record], *, direct: bool) -> None:
        if records and direct and not self.spool.pending and await self._connect():
            records = await self._send(records)
        if records:
            await self._to_spool(records)

    async def _replay(self) -> None:
        if not await self._connect():
            return
        records, cursor = await asyncio.to_thread(self.spool.peek, _BATCH)
        if await self._send(records):
            return
        await asyncio.to_thread(self.spool.ack, cursor)
        if not self.spool.pending:
            log.info("the spool is empty again: every event kept while Kafka was away is published")

    async def _connect(self) -> bool:
        if self._producer is not None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers, client_id="llmwatch-gateway", acks="all",
            request_timeout_ms=int(self.publish_timeout * 1000), retry_backoff_ms=100,
            max_request_size=max(_KAFKA_MAX_REQUEST, self.rules.max_event_bytes + 65_536),
        )
        try:
            await asyncio.wait_for(producer.start(), self.publish_timeout)
        except Exception as exc:  # any failure to connect means: spool and retry later
            await self._stop_quietly(producer)
            self._failed(f"cannot reach Kafka at {self.bootstrap_servers}: {exc!r}")
            return False
        self._producer = producer
        self._backoff = 0.0
        self.metrics.kafka_up.set(1)
        log.info("connected to Kafka at %s", self.bootstrap_servers)
        return True

    async def _send(self, records: Sequence[Record]) -> list[Record]:
        """Publish and wait for the acks; returns the records to try again (Kafka did not acknowledge them in
        time). Records Kafka refused for good are set aside, not returned."""
        assert self._producer is not None
        if not records:
            return []
        sent: list[tuple[Record, asyncio.Future[Any]]] = []
        refused = 0
        reason = ""
        try:
            async with asyncio.timeout(self.publish_timeout):
                for record in records:
                    try:
                        sent.append((record, await self._producer.send(record.topic, record.value, key=record.key)))
                    except _REFUSED_FOR_GOOD as exc:
                        refused += 1
                        self._refuse(record, repr(exc), type(exc).__name__)
                if sent:
                    await asyncio.wait([future for _, future in sent])
        except Exception as exc:  # a timeout or a broker error: the rest goes to the spool
            reason = repr(exc)
        failed = []
        for record, future in sent:
            if not future.done() or future.cancelled():
                failed.append(record)
                future.add_done_callback(_retrieve)
            elif isinstance(error := future.exception(), _REFUSED_FOR_GOOD):
                self._refuse(record, repr(error), type(error).__name__)
            elif error is not None:
                failed.append(record)
            else:
                self.metrics.published.labels(record.topic).inc()
        failed += records[len(sent) + refused:]  # never handed to the producer
        if failed:
            self._failed(f"Kafka at {self.bootstrap_servers} did not acknowledge {len(failed)} of {len(records)} "
                         f"events within {self.publish_timeout:g} s" + (f" ({reason})" if reason else ""))
            await self._close_producer()
        return failed

    def _refuse(self, record: Record, why: str, reason: str) -> None:
        """Set a record aside for good: counted, logged, kept in `refused.jsonl` while there is room."""
        self.metrics.refused.labels(reason).inc()
        try:
            kept = self.set_aside.add(record, why)
        except OSError as exc:
            kept = False
            log.error("writing %s failed: %s", self.set_aside.path, exc)
        log.error("an event for %s (%d bytes) was set aside, Kafka refuses it for good: %s; %s", record.topic,
                  len(record.value), why, f"kept in {self.set_aside.path}" if kept else
                  f"not kept, {self.set_aside.path} is full")

    def _failed(self, reason: str) -> None:
        self.metrics.publish_errors.inc()
        self.metrics.kafka_up.set(0)
        first = self._backoff == 0
        self._backoff = min(self.max_backoff, max(0.25, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff
        if first:
            log.warning("%s; events go to the spool at %s and are replayed when Kafka is back",
                        reason, self.spool.directory)

    async def _to_spool(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            stored = await asyncio.to_thread(self.spool.append, records)
        except OSError as exc:
            self.metrics.dropped.labels("spool_error").inc(len(records))
            log.error("%d events dropped: writing the spool at %s failed: %s", len(records), self.spool.directory, exc)
            return
        self.metrics.spooled.inc(stored)
        lost = len(records) - stored
        if lost:
            self.metrics.dropped.labels("spool_full").inc(lost)
            if reported := self._spool_losses.add(lost):
                log.error("SPOOL FULL: %d events dropped; %s holds %d bytes (LLMWATCH_SERVING__SPOOL_MAX_BYTES=%d) "
                          "and Kafka at %s is still unreachable: bring Kafka back or give the spool more room",
                          reported, self.spool.directory, self.spool.size_bytes, self.spool.max_bytes,
                          self.bootstrap_servers)
        self._spool_full = lost > 0

    def _spool_leftovers(self) -> None:
        """Last resort at shutdown: whatever is still queued goes to the spool, synchronously."""
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        records = self._encode_all(items)
        stored = self.spool.append(records)
        if stored < len(records):
            log.error("SPOOL FULL at shutdown: %d events dropped", len(records) - stored)

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._stop_quietly(producer)

    async def _stop_quietly(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), self.publish_timeout)
        except Exception as exc:  # closing a producer to a dead broker may fail; nothing to do
            log.debug("closing the Kafka producer: %r", exc)

    def _update_gauges(self) -> None:
        self.metrics.queue_depth.set(self._queue.qsize())
        self.metrics.spool_events.set(self.spool.pending)
        self.metrics.spool_bytes.set(self.spool.size_bytes)
        self.metrics.spool_full.set(int(self._spool_full))

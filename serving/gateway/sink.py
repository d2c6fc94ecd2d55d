"""Events off the request path: an in-memory queue, drained by one task into Kafka or the on-disk spool.

Request handlers call `submit`, which never waits. One background task builds and redacts the events,
publishes them with aiokafka (acks=all; keyed as `streams.publisher.Publisher` keys them), and sends
whatever Kafka did not acknowledge within `publish_timeout_seconds` to the spool. While the spool holds
anything, new events join it behind the old ones, and the same task replays it, oldest first, with
backoff, until Kafka is back; so events reach Kafka in the order they were spooled. One task does all
of it, so there is no race between publishing, spooling and replaying.

Delivery is at least once: a timeout can resend an event Kafka had in fact taken; the store collapses
duplicates by `event_id`. On shutdown the queue is flushed (to Kafka, or to the spool) and the spool is
kept for the next start. Events are lost only when the spool is full, and then loudly (log and metric).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from itertools import zip_longest
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from schemas.events import FeedbackEvent, InferenceEvent
from schemas.topics import Topics, destination
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.recording import Exchange, inference_event, redacted_feedback
from serving.gateway.redaction import Redactor
from serving.gateway.spool import Record, Spool

log = logging.getLogger(__name__)

_STOP = object()
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
                 metrics: GatewayMetrics, publish_timeout: float, max_backoff: float, queue_max: int) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.spool = spool
        self.redactor = redactor
        self.metrics = metrics
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self.queue_max = queue_max
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._producer: AIOKafkaProducer | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._task: asyncio.Task[None] | None = None
        self._spool_full = False
        self._queue_losses = _LossReport()
        self._spool_losses = _LossReport()
        self._update_gauges()

    def submit(self, item: Exchange | FeedbackEvent) -> None:
        """Hand an event over without waiting; if even the queue is full, count and log the loss."""
        if self._queue.qsize() >= self.queue_max:
            self.metrics.dropped.labels("queue_full").inc()
            if lost := self._queue_losses.add(1):
                log.error("QUEUE FULL: %d events dropped: %d events already wait to be published (is the disk "
                          "too slow for the spool?)", lost, self.queue_max)
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
            records = []
            for item in items:
                if (record := self._encode(item)) is not None:
                    records.append(record)
                await asyncio.sleep(0)  # one event at a time: a request never waits behind a whole batch
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
        return items

    def _encode(self, item: Any) -> Record | None:
        if item is _STOP:
            return None
        try:
            event: InferenceEvent | FeedbackEvent
            if isinstance(item, Exchange):
                event = inference_event(item, self.redactor)
                for kind, tokens in (("prompt", event.prompt_tokens), ("completion", event.completion_tokens)):
                    if tokens:
                        self.metrics.tokens.labels(kind).inc(tokens)
            else:
                event = redacted_feedback(item, self.redactor)
            topic, key = destination(event, self.topics)
            return Record(topic, key, event.model_dump_json().encode())
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
        """Publish and wait for the acks; returns the records Kafka did not acknowledge in time."""
        assert self._producer is not None
        if not records:
            return []
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.publish_timeout):
                for record in records:
                    futures.append(await self._producer.send(record.topic, record.value, key=record.key))
                await asyncio.wait(futures)
        except Exception as exc:  # a timeout or a broker error: the rest goes to the spool
            reason = repr(exc)
        else:
            reason = ""
        failed = []
        for record, future in zip_longest(records, futures):
            if future is None or not future.done() or future.cancelled() or future.exception() is not None:
                failed.append(record)
                if future is not None:
                    future.add_done_callback(_retrieve)
            else:
                self.metrics.published.labels(record.topic).inc()
        if failed:
            self._failed(f"Kafka at {self.bootstrap_servers} did not acknowledge {len(failed)} of {len(records)} "
                         f"events within {self.publish_timeout:g} s" + (f" ({reason})" if reason else ""))
            await self._close_producer()
        return failed

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
        records = [record for record in map(self._encode, items) if record is not None]
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

"""A process that is one member of a kafka-python consumer group (the trainer, the deployer).

Not a Faust agent: their work blocks (a training run, a vLLM call, a canary's reads), so each is a plain
loop that polls, hands every value to the member, commits after the batch is handled, and lets the member
do its timed work between polls. `run_member` is the whole life of such a process, from topics to stop.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from kafka import KafkaConsumer

from schemas.errors import StoreUnavailableError
from streams.kafka.topics import ensure_topics
from streams.publisher import Publisher
from streams.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class Member(Protocol):
    stopping: threading.Event

    def recover(self) -> None:
        """Rebuild what a previous process left, before the first poll."""

    def handle(self, value: bytes) -> None: ...

    def tick(self) -> None:
        """Timed work, between polls (at least every half second)."""

    def stop(self) -> None:
        """Finish or abandon work in progress; called once, after the last poll."""


def group_consumer(settings: Settings, topic: str, group_id: str, client_id: str) -> KafkaConsumer:
    session_ms = int(settings.kafka_session_timeout_seconds * 1000)
    return KafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap_servers.split(","), group_id=group_id,
        enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(session_ms // 6, 100), fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        client_id=client_id)


def serve(member: Member, consumer: KafkaConsumer) -> None:
    """At least once: a batch's offsets are committed after every value in it was handled."""
    while not member.stopping.is_set():
        batches = consumer.poll(timeout_ms=500)
        for messages in batches.values():
            for message in messages:
                if message.value:
                    member.handle(message.value)
        if batches:
            consumer.commit()
        member.tick()


def wait_for_store(read: Callable[[], T], stopping: threading.Event, wait_seconds: float = 600) -> T | None:
    """`read()` once the store answers; None if asked to stop first. Under `llmwatch up` these processes
    start before the worker that owns the embedded store."""
    deadline = time.monotonic() + wait_seconds
    said = False
    while True:
        try:
            return read()
        except StoreUnavailableError as exc:
            if stopping.wait(1.0):
                return None
            if time.monotonic() > deadline:
                raise
            if not said:
                log.info("waiting for the store: %s", exc)
                said = True


def run_member(settings: Settings, *, topic: str, group_id: str, client_id: str,
               build: Callable[[Publisher], Member], ready: str) -> None:
    """Blocks until SIGINT/SIGTERM."""
    ensure_topics(settings.bootstrap_servers, settings.topics)
    with Publisher.from_settings(settings, client_id=client_id) as publisher:
        member = build(publisher)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: member.stopping.set())
        member.recover()
        if member.stopping.is_set():
            return
        consumer = group_consumer(settings, topic, group_id, client_id)
        log.info(ready)
        try:
            serve(member, consumer)
        finally:
            member.stop()
            consumer.close()

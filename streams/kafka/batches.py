"""Whole batches from the consumer to a handler, without Faust's per-message stream machinery.

Why: a Faust agent receives one message at a time: a task pair per message in the fetcher (`wait_first`),
a queue put and get, the stream's processors and the take buffer. That cost about as much CPU per event
as decoding and scoring it. A batch route takes the messages of its topic straight from the consumer's
fetch loop into a list, hands the list to its handlers, and acknowledges the messages only when every
handler has returned: Faust commits an offset only once every message before it is acknowledged, so
the at-least-once guarantee is the agents' (a crash before the ack replays the batch).

Faust still owns the consumer group, the subscription (the topic is registered with the conductor),
rebalancing (a message of an earlier consumer generation is neither handled nor acknowledged: its
partition is read again from the committed offset) and the commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from faust.types import Message

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[Message]], Awaitable[None]]


@dataclass
class BatchRoute:
    """The messages of one topic waiting for its handlers; at most `2 * max_size` wait before the fetch
    loop waits for room (so memory stays bounded while a batch is stored)."""

    topic: str
    max_size: int
    within: float
    handlers: list[BatchHandler] = field(default_factory=list)
    pending: list[Message] = field(default_factory=list)
    first_at: float = 0.0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Future | None = None

    def __post_init__(self) -> None:
        self.room.set()

    def add(self, message: Message) -> bool:
        """Queue one message; False when the route is full and the caller should wait for `room`."""
        if not self.pending:
            self.first_at = time.monotonic()
        self.pending.append(message)
        if len(self.pending) == 1 or len(self.pending) == self.max_size:
            self.arrived.set()
        if len(self.pending) >= 2 * self.max_size:
            self.room.clear()
            return False
        return True

    async def next_batch(self) -> list[Message]:
        """Wait for a message, then for `max_size` of them or `within` seconds after the first."""
        while not self.pending:
            self.arrived.clear()
            await self.arrived.wait()
        while len(self.pending) < self.max_size:
            left = self.first_at + self.within - time.monotonic()
            if left <= 0:
                break
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), timeout=left)
        batch, self.pending = self.pending[: self.max_size], self.pending[self.max_size:]
        if self.pending:
            self.first_at = time.monotonic()
        if len(self.pending) < 2 * self.max_size:
            self.room.set()
        return batch

"""Ingest: raw records in, typed rows and dead letters out; the Faust agents around it only move bytes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from processors.validation import Limits, RawRecord, dead_letter, decode
from schemas.events import DeadLetterEvent, Event
from streams.writer import ClickHouseWriter

log = logging.getLogger(__name__)

PublishDeadLetters = Callable[[Sequence[DeadLetterEvent]], Awaitable[None]]


@dataclass
class IngestCounts:
    """Per process since start: received == stored + dead_lettered once a batch is done."""

    received: int = 0
    stored: int = 0
    dead_lettered: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Ingest:
    def __init__(self, writer: ClickHouseWriter, publish_dead_letters: PublishDeadLetters, limits: Limits) -> None:
        self.writer = writer
        self.publish_dead_letters = publish_dead_letters
        self.limits = limits
        self.counts: dict[str, IngestCounts] = {}

    async def __call__(self, records: Sequence[RawRecord], model: type[Event]) -> None:
        """Store one batch. Returns only when every record is a row or a dead letter: then it may be acked."""
        decoded = [(record, decode(record, model, self.limits)) for record in records]
        good = [(record, event) for record, event in decoded if not isinstance(event, DeadLetterEvent)]
        dead = [event for _, event in decoded if isinstance(event, DeadLetterEvent)]
        rejected = await self.writer.write([event for _, event in good])
        dead += [dead_letter(good[r.index][0], "rejected_by_store", r.error, self.limits) for r in rejected]
        if dead:
            await self.publish_dead_letters(dead)
            unstored = await self.writer.write(dead)
            for r in unstored:
                log.error("dead letter %s could not be stored either (it is on the dead-letter topic): %s",
                          dead[r.index].event_id, r.error)
        counts = self.counts.setdefault(model.table, IngestCounts())
        counts.received += len(records)
        counts.stored += len(good) - len(rejected)
        counts.dead_lettered += len(dead)
        for letter in dead:
            counts.by_reason[letter.reason] = counts.by_reason.get(letter.reason, 0) + 1

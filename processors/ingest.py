"""Ingest: raw records in, typed rows and dead letters out; the Faust agents around it only move bytes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.ports import RowWriter
from processors.validation import Limits, RawRecord, dead_letter, decode
from schemas.events import DeadLetterEvent, Event, utcnow

log = logging.getLogger(__name__)

PublishDeadLetters = Callable[[Sequence[DeadLetterEvent]], Awaitable[None]]
Enrich = tuple[type[Event], Callable[[list[Any]], list[list[Any]]]]
"""(stored model, events -> its rows): what is stored with an event (scores) is added before writing; pure."""
Observe = Callable[[list[Event]], None]
"""Sees the events of a stored batch (e.g. to sample them for embedding); must not block."""


@dataclass
class IngestCounts:
    """Per process since start: received == stored + dead_lettered once a batch is done."""

    received: int = 0
    stored: int = 0
    dead_lettered: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    dead_letters_unstored: int = 0
    """Dead letters the store refused as well: on the dead-letter topic only, each logged as an ERROR."""


class Ingest:
    def __init__(self, writer: RowWriter, publish_dead_letters: PublishDeadLetters, limits: Limits, *,
                 enrich: dict[type[Event], Enrich] | None = None,
                 observe: dict[type[Event], Observe] | None = None) -> None:
        self.writer = writer
        self.publish_dead_letters = publish_dead_letters
        self.limits = limits
        self.enrich = enrich or {}
        self.observe = observe or {}
        self.counts: dict[str, IngestCounts] = {}
        """Per table (what `/llmwatch/health` shows)."""
        self.by_topic: dict[str, IngestCounts] = {}
        """Per input topic (what `/metrics` shows)."""

    async def __call__(self, records: Sequence[RawRecord], model: type[Event]) -> None:
        """Store one batch. Returns only when every record is a row or a dead letter: then it may be acked."""
        now = utcnow()  # one clock read per batch: the retention check needs no finer time
        decoded = [(record, decode(record, model, self.limits, now)) for record in records]
        good = [(record, event) for record, event in decoded if not isinstance(event, DeadLetterEvent)]
        dead = [event for _, event in decoded if isinstance(event, DeadLetterEvent)]
        events = [event for _, event in good]
        if model in self.enrich:
            stored_as, rows = self.enrich[model]
            rejected = await self.writer.write_rows(stored_as, rows(events)) if events else []
        else:
            rejected = await self.writer.write(events)
        dead += [dead_letter(good[r.index][0], "rejected_by_store", r.error, self.limits) for r in rejected]
        unstored = []
        if dead:
            await self.publish_dead_letters(dead)
            unstored = await self.writer.write(dead)
            for r in unstored:
                log.error("dead letter %s could not be stored either (it is on the dead-letter topic): %s",
                          dead[r.index].event_id, r.error)
        if model in self.observe:
            refused = {r.index for r in rejected}
            self.observe[model]([e for i, e in enumerate(events) if i not in refused])
        reasons: dict[str, int] = {}
        for letter in dead:
            reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
        tallies = [self.counts.setdefault(model.table, IngestCounts())]
        if records:
            tallies.append(self.by_topic.setdefault(records[0].topic, IngestCounts()))
        for counts in tallies:
            counts.received += len(records)
            counts.stored += len(good) - len(rejected)
            counts.dead_lettered += len(dead)
            counts.dead_letters_unstored += len(unstored)
            for reason, number in reasons.items():
                counts.by_reason[reason] = counts.by_reason.get(reason, 0) + number

"""The one way rows reach ClickHouse: batched, retried with backoff, split when refused, never lost quietly.

Batching by size or interval is done upstream (each agent's `take_events(size, within=interval)`),
so a batch is acknowledged to Kafka only once its rows are stored. Here a batch is split into inserts
of at most `max_rows`; an unreachable store is waited out with capped exponential backoff (the batch
is never dropped and never acknowledged meanwhile); a batch the store refuses is halved until the
offending rows are isolated, and those are handed back so the caller can dead-letter them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from schemas.errors import StoreUnavailableError
from schemas.events import Event
from schemas.tables import Rejected, columns, to_rows
from streams.store.admin import USER_LABELLED_TABLES, without_forgotten_users
from streams.store.runner import Store

log = logging.getLogger(__name__)

RETRYABLE = (OperationalError, ConnectionError, TimeoutError, StoreUnavailableError)

STORE_SIDE_CODES = frozenset({
    16,  # NO_SUCH_COLUMN_IN_TABLE: the store is behind the worker's schema
    60, 81,  # UNKNOWN_TABLE, UNKNOWN_DATABASE: dropped or not migrated yet
    74, 75, 76,  # CANNOT_READ_FROM / WRITE_TO_FILE_DESCRIPTOR, CANNOT_OPEN_FILE: the disk
    159, 209, 210,  # TIMEOUT_EXCEEDED, SOCKET_TIMEOUT, NETWORK_ERROR
    164, 242,  # READONLY, TABLE_IS_READ_ONLY
    202, 203,  # TOO_MANY_SIMULTANEOUS_QUERIES, NO_FREE_CONNECTION
    236, 394,  # ABORTED, QUERY_WAS_CANCELLED
    241, 243, 252,  # MEMORY_LIMIT_EXCEEDED, NOT_ENOUGH_SPACE, TOO_MANY_PARTS
    319, 497, 516, 999,  # UNKNOWN_STATUS_OF_INSERT, ACCESS_DENIED, AUTHENTICATION_FAILED, KEEPER_EXCEPTION
})
"""ClickHouse errors that say the store cannot take rows now, whichever rows they are: waited out, never
blamed on the rows (a full disk must not turn every event into a dead letter)."""


def store_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, RETRYABLE):
        return True
    code = re.search(r"Code: (\d+)", str(exc)) if isinstance(exc, ClickHouseError) else None
    return code is not None and int(code[1]) in STORE_SIDE_CODES


@dataclass
class TableStats:
    rows: int = 0
    inserts: int = 0
    retries: int = 0
    rejected: int = 0


def backoff_seconds(attempt: int, cap: float, *, base: float = 0.1) -> float:
    """Full-jitter exponential backoff (AWS architecture blog), capped."""
    return random.uniform(0, min(cap, base * 2**attempt))


def _insert(client: Client, model: type[Event], rows: Sequence[Sequence[Any]]) -> None:
    names = columns(model)
    if model.table in USER_LABELLED_TABLES:
        rows = without_forgotten_users(client, names, rows)
    client.insert(model.table, rows, column_names=names)


class ClickHouseWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_rows: int,
        max_backoff_seconds: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observe_insert: Callable[[str, float], None] | None = None,
    ) -> None:
        """`observe_insert(table, seconds)` is told how long each insert that succeeded took."""
        self.store = store
        self._observe = observe_insert
        self.max_rows = max_rows
        self.max_backoff_seconds = max_backoff_seconds
        self.stats: dict[str, TableStats] = {}
        self._sleep = sleep

    async def write(self, events: Sequence[Event]) -> list[Rejected]:
        """Store events of one kind; returns the ones the store refused (by index), with its reason."""
        return await self.write_rows(type(events[0]), to_rows(events)) if events else []

    async def write_rows(self, model: type[Event], rows: Sequence[Sequence[Any]]) -> list[Rejected]:
        """Store rows already in `columns(model)` order (event_id first)."""
        stats = self.stats.setdefault(model.table, TableStats())
        rejected: list[Rejected] = []
        for start in range(0, len(rows), self.max_rows):
            await self._insert_or_split(model, rows, start, min(start + self.max_rows, len(rows)), stats, rejected)
        return rejected

    async def _insert_or_split(self, model: type[Event], rows: Sequence[Sequence[Any]], lo: int, hi: int,
                               stats: TableStats, rejected: list[Rejected]) -> None:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                await self.store.call(_insert, model, rows[lo:hi])
            except Exception as exc:
                if not store_unavailable(exc):
                    await self._refused(model, rows, lo, hi, exc, stats, rejected)
                    return
                delay = backoff_seconds(attempt, self.max_backoff_seconds)
                stats.retries += 1
                attempt += 1
                log.warning("store unavailable writing %d rows to %s (attempt %d, retry in %.1fs): %s",
                            hi - lo, model.table, attempt, delay, exc)
                await self._sleep(delay)
                continue
            stats.rows += hi - lo
            stats.inserts += 1
            if self._observe is not None:
                self._observe(model.table, time.perf_counter() - started)
            return

    async def _refused(self, model: type[Event], rows: Sequence[Sequence[Any]], lo: int, hi: int, exc: Exception,
                       stats: TableStats, rejected: list[Rejected]) -> None:
        """The store (or the driver) refused the rows themselves: halve until the offending ones are alone."""
        if hi - lo == 1:
            stats.rejected += 1
            log.error("%s refused event %s: %s", model.table, rows[lo][0], exc)
            rejected.append(Rejected(lo, f"{type(exc).__name__}: {exc}"))
            return
        mid = (lo + hi) // 2
        await self._insert_or_split(model, rows, lo, mid, stats, rejected)
        await self._insert_or_split(model, rows, mid, hi, stats, rejected)

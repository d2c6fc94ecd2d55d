"""The writer and the store against a real chdb engine (the session `store`)."""

import asyncio
import random
from typing import Any, ClassVar

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from llmwatch.traffic import inference_event
from schemas.events import STORED_MODELS, Event
from streams.settings import Retention
from streams.store.client import migrate, migration_files, schema_version
from streams.store.runner import StoreRunner
from streams.store.sql import run_query
from streams.store.writer import ClickHouseWriter, backoff_seconds


class Reading(Event):
    """A test-only kind whose column (UInt8) is narrower than the model allows, so the store refuses some rows."""

    table: ClassVar[str] = "writer_test_readings"
    value: int


class Outage:
    """The real store behind a connection that fails the first `failures` calls."""

    def __init__(self, store: StoreRunner, failures: int) -> None:
        self.store = store
        self.failures = failures

    async def call(self, fn: Any, *args: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise OperationalError("connection refused")
        return await self.store.call(fn, *args)


async def no_sleep(_: float) -> None:
    return None


def count(store: StoreRunner, sql: str) -> int:
    return int(asyncio.run(store.call(run_query, sql)).rows[0][0])


def test_migrations_are_idempotent_and_recorded(store: StoreRunner) -> None:
    version = asyncio.run(store.call(migrate, Retention()))
    assert version == asyncio.run(store.call(schema_version)) >= 1
    assert count(store, "SELECT count() FROM schema_migrations") == len(migration_files())
    assert version == migration_files()[-1][0]


def test_retention_follows_settings(store: StoreRunner) -> None:
    def ttl(client: Any) -> str:
        return client.command("SELECT engine_full FROM system.tables WHERE name = 'inference_events'")

    asyncio.run(store.call(migrate, Retention(events_days=7)))
    assert "toIntervalDay(7)" in asyncio.run(store.call(ttl))
    asyncio.run(store.call(migrate, Retention(events_days=0)))
    assert " TTL " not in asyncio.run(store.call(ttl))
    asyncio.run(store.call(migrate, Retention()))


def test_replayed_events_are_never_seen_twice(store: StoreRunner) -> None:
    # seeds named after the test: another test seeded alike would store the same event_id under another sort key
    events = [inference_event(random.Random(f"replayed-{seed}")) for seed in range(50)]
    writer = ClickHouseWriter(store, max_rows=7, max_backoff_seconds=1)
    for _ in range(3):
        assert asyncio.run(writer.write(events)) == []
    ids = ",".join(f"'{e.event_id}'" for e in events)
    assert count(store, f"SELECT count() FROM inference_events WHERE event_id IN ({ids})") == 50
    assert writer.stats["inference_events"].inserts == 3 * 8


def test_rows_the_store_refuses_are_isolated_and_handed_back(store: StoreRunner) -> None:
    asyncio.run(store.call(lambda c: c.command(
        "CREATE TABLE IF NOT EXISTS writer_test_readings (event_id UUID, schema_version UInt16, "
        "timestamp DateTime64(3, 'UTC'), value UInt8) ENGINE = ReplacingMergeTree ORDER BY event_id")))
    readings = [Reading(value=v) for v in [1, 2, 300, 4, 5, 6, 7, 999, 9, 10]]
    writer = ClickHouseWriter(store, max_rows=100, max_backoff_seconds=1)
    rejected = asyncio.run(writer.write(readings))
    assert [r.index for r in rejected] == [2, 7]
    assert count(store, "SELECT count() FROM writer_test_readings") == 8
    assert writer.stats[Reading.table].rejected == 2


def test_an_unreachable_store_is_waited_out_not_dropped(store: StoreRunner) -> None:
    outage = Outage(store, failures=3)
    delays: list[float] = []

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)

    writer = ClickHouseWriter(outage, max_rows=100, max_backoff_seconds=5, sleep=record_sleep)  # type: ignore[arg-type]
    event = inference_event(random.Random("unreachable-store"))
    assert asyncio.run(writer.write([event])) == []
    assert len(delays) == 3 and writer.stats["inference_events"].retries == 3
    assert count(store, f"SELECT count() FROM inference_events WHERE event_id = '{event.event_id}'") == 1


def test_backoff_is_capped() -> None:
    assert all(0 <= backoff_seconds(attempt, 2.0) <= 2.0 for attempt in range(30))


@pytest.mark.parametrize("model", STORED_MODELS, ids=lambda m: m.table)
def test_every_event_model_matches_its_table(store: StoreRunner, model: type[Event]) -> None:
    described = asyncio.run(store.call(run_query, f"DESCRIBE TABLE {model.table}"))
    assert [row[0] for row in described.rows if row[0] != "ingested_at"] == list(model.model_fields)

"""Analysts' SQL is read-only and cannot touch the worker's session; llmwatch's own writes have commands."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.errors import StoreError
from schemas.events import TextEmbedding
from streams.store.admin import call_command
from streams.store.runner import StoreRunner
from streams.store.sql import run_query
from streams.store.writer import ClickHouseWriter


def analyst(store: StoreRunner, sql: str) -> list[list[Any]]:
    return asyncio.run(store.call_in_own_session(run_query, sql)).rows


@pytest.mark.parametrize("sql", [
    "DROP TABLE inference_events",
    "CREATE TABLE analyst_scratch (a Int32) ENGINE = Memory",
    "INSERT INTO drift_reference (event_id) VALUES (generateUUIDv4())",
    "ALTER TABLE inference_events DELETE WHERE 1",
    "TRUNCATE TABLE feedback_events",
    "OPTIMIZE TABLE inference_events FINAL",
    "SELECT 1 SETTINGS readonly = 0",
])
def test_statements_that_change_the_store_are_refused_with_what_to_do_instead(store: StoreRunner, sql: str) -> None:
    with pytest.raises(StoreError, match=r"read-only.*llmwatch drift set-reference"):
        analyst(store, sql)
    assert "inference_events" in {row[0] for row in analyst(store, "SHOW TABLES")}
    assert "analyst_scratch" not in {row[0] for row in analyst(store, "SHOW TABLES")}


def test_reads_and_query_settings_still_work(store: StoreRunner) -> None:
    assert analyst(store, "SELECT count() FROM inference_events SETTINGS final = 0, max_threads = 1")[0][0] >= 0
    assert analyst(store, "DESCRIBE TABLE dead_letters")[0][0] == "event_id"


def test_set_and_use_stay_in_the_analysts_own_session(store: StoreRunner) -> None:
    analyst(store, "USE system")
    analyst(store, "SET max_result_rows = 1")
    assert asyncio.run(store.call(lambda client: client.command("SELECT currentDatabase()"))) == "default"
    assert analyst(store, "SELECT currentDatabase()") == [["default"]]
    assert len(analyst(store, "SELECT number FROM numbers(3)")) == 3


def test_drift_reference_commands_write_what_sql_may_not(store: StoreRunner) -> None:
    start = datetime.now(UTC) - timedelta(hours=2)
    vectors = [TextEmbedding(event_id=f"00000000-0000-4000-8000-{i:012d}", timestamp=start + timedelta(seconds=i),
                             model="pin-test", adapter="", prompt_version="", field="prompt", vector=[0.1, 0.2])
               for i in range(12)]
    assert asyncio.run(ClickHouseWriter(store, max_rows=100, max_backoff_seconds=1).write(vectors)) == []

    def command(name: str, **args: Any) -> Any:
        return asyncio.run(store.call(call_command, name, args))

    args = {"since": start.isoformat(), "until": (start + timedelta(seconds=10)).isoformat(), "model": "pin-test"}
    with pytest.raises(StoreError, match="only 10 sampled events"):
        command("drift.pin_reference", **args, min_samples=11)
    assert command("drift.pin_reference", **args, min_samples=5) == 10
    assert analyst(store, "SELECT count() FROM drift_reference") == [[10]]
    command("drift.clear_reference")
    assert analyst(store, "SELECT count() FROM drift_reference") == [[0]]
    with pytest.raises(StoreError, match="unknown command"):
        command("sql", query="DROP TABLE inference_events")

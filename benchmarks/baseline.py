"""The baseline every ingest arm is compared with: a plain aiokafka consumer and clickhouse-connect inserts.

Why it exists: absolute rates depend on the machine, so each benchmark also runs the least that gets the
same events into the same table (json.loads, two timestamps parsed, an insert of the same columns, in
batches of the worker's size or flush time, a commit after each insert) and reports ours as a ratio. To be
a fair arm it consumes with the worker's settings: the same batch size and flush time and the same fetch
wait (`kafka_fetch_max_wait_ms`; aiokafka's own default is 500 ms, the worker's 100 ms). It runs in a child
process because a process can open one chdb path only; the same child mode reads a finished store.

Used by `python benchmarks/ingest.py ...` and `python benchmarks/processors.py ...`; it runs itself as

    python -m benchmarks.baseline CONFIG_JSON          # consume, insert, commit; JSON lines on stdout
    python -m benchmarks.baseline --query SPEC_JSON    # queries on a store no process holds
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from benchmarks.common import (
    DEFAULTS,
    REPO,
    RESULT_PREFIX,
    child_result,
    peak_rss_kib,
)
from benchmarks.stack import (
    STATS_SQL,
    Run,
    TableStats,
)
from schemas.events import InferenceEvent
from schemas.tables import columns

COLUMNS = columns(InferenceEvent)


@dataclass(frozen=True)
class BaselineConfig:
    bootstrap: str
    topic: str
    group: str
    store_dir: str
    expect: int
    where: str
    batch_size: int
    flush_seconds: float
    fetch_max_wait_ms: int

    @property
    def description(self) -> str:
        return (f"batch {self.batch_size}, flush {self.flush_seconds:g} s, fetch wait {self.fetch_max_wait_ms} ms")


def baseline_config(bootstrap: str, topic: str, workdir: Path, label: str, expect: int, where: str) -> BaselineConfig:
    """The worker's defaults, so that the two arms differ only in what they do per event."""
    return BaselineConfig(bootstrap, topic, f"bench-{label}-{uuid.uuid4().hex[:8]}",
                          str(workdir / label / "clickhouse"), expect, where, DEFAULTS.ingest_batch_size,
                          DEFAULTS.ingest_flush_seconds, DEFAULTS.kafka_fetch_max_wait_ms)


def baseline_row(value: bytes) -> list[Any]:
    """The least that gets the same columns in: JSON, two timestamps parsed, messages kept as JSON text."""
    event = json.loads(value)
    for name in ("timestamp", "completed_at"):
        if event.get(name):
            event[name] = datetime.fromisoformat(event[name])
    if event.get("messages") is not None:
        event["messages"] = json.dumps(event["messages"], ensure_ascii=False)
    return [event.get(name) for name in COLUMNS]


async def take(consumer: AIOKafkaConsumer, size: int, within: float) -> list[bytes]:
    """Up to `size` values, or what came within `within` seconds: Faust's take_events, by hand."""
    values: list[bytes] = []
    deadline = time.monotonic() + within
    while len(values) < size and (left := deadline - time.monotonic()) > 0:
        batches = await consumer.getmany(timeout_ms=int(left * 1000), max_records=size - len(values))
        values += [record.value for records in batches.values() for record in records]
    return values


def report(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def consume(config: BaselineConfig) -> None:
    """The child process: consume, insert, commit; one JSON line per insert, then a result line."""
    from streams.settings import Retention
    from streams.store.client import connect, migrate
    from streams.store.sql import run_query

    client = connect(f"chdb://{config.store_dir}")
    migrate(client, Retention())  # the very tables the worker writes to
    consumer = AIOKafkaConsumer(
        config.topic, bootstrap_servers=config.bootstrap, group_id=config.group, auto_offset_reset="earliest",
        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
    )
    await consumer.start()
    inserted = 0
    cpu: list[tuple[float, float]] = []
    try:
        while inserted < config.expect:
            values = await take(consumer, config.batch_size, config.flush_seconds)
            if not values:
                continue
            client.insert("inference_events", [baseline_row(value) for value in values], column_names=COLUMNS)
            await consumer.commit()
            inserted += len(values)
            cpu.append((time.monotonic(), own_cpu_seconds()))
            report({"inserted": inserted})
    finally:
        await consumer.stop()
    stats = run_query(client, STATS_SQL.format(where=config.where)).rows[0]
    (wall0, cpu0), (wall1, cpu1) = cpu[0], cpu[-1]
    report({"stats": stats, "cpu_percent": 100 * (cpu1 - cpu0) / max(wall1 - wall0, 1e-3),
            "peak_rss_kib": peak_rss_kib(os.getpid())})
    client.close()


class Baseline:
    """The consumer above as a child process; it owns its own chdb store."""

    def __init__(self, config: BaselineConfig, log: Path) -> None:
        self.config = config
        self.log = log
        self.started_ms = 0.0
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.started_ms = time.time() * 1000
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.baseline", json.dumps(asdict(self.config)), cwd=REPO,
                stdout=asyncio.subprocess.PIPE, stderr=log, limit=1 << 20,
            )

    async def wait_for(self, done: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """Read report lines until one satisfies `done`; lines that are not reports are ignored."""
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while line := await asyncio.wait_for(self.process.stdout.readline(), max(deadline - time.monotonic(), 0)):
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and done(message):
                return message
        raise RuntimeError(f"the baseline exited with code {await self.process.wait()}; see {self.log}")

    async def finish(self, produced_rate: float = 0.0) -> Run:
        result = await self.wait_for(lambda m: "stats" in m, timeout=max(120.0, self.config.expect / 500))
        assert self.process is not None
        await self.process.wait()
        return Run("baseline", self.config.description, self.started_ms, TableStats.from_row(result["stats"]),
                   {"total": result["cpu_percent"]}, int(result["peak_rss_kib"]), produced_rate)


def store_queries(store_dir: Path, sqls: list[str], log_file: Path) -> list[list[list[Any]]]:
    """Run queries on a chdb store in a child process (a process can open one chdb path only)."""
    with log_file.open("ab") as errors:
        done = subprocess.run([sys.executable, "-m", "benchmarks.baseline", "--query",
                               json.dumps([str(store_dir), sqls])],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=errors, check=True)
    return child_result(done.stdout)  # type: ignore[no-any-return]


def query_child(spec: str) -> None:
    from streams.store.client import connect
    from streams.store.sql import run_query

    store_dir, sqls = json.loads(spec)
    client = connect(f"chdb://{store_dir}")
    try:
        print(RESULT_PREFIX + json.dumps([run_query(client, sql).rows for sql in sqls], default=str), flush=True)
    finally:
        client.close()


if __name__ == "__main__":
    if sys.argv[1] == "--query":
        query_child(sys.argv[2])
    else:
        asyncio.run(consume(BaselineConfig(**json.loads(sys.argv[1]))))

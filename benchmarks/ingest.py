"""Ingest benchmark: how many events/s `llmwatch worker` stores, and how soon an event is queryable.

Why it exists: llmwatch promises one worker sustains >= 10,000 inference events/s and that an event
is queryable in ClickHouse < 2 s (p99) after it is produced at 1,000 events/s. Absolute numbers
depend on the machine, so each run also measures a baseline on the same machine, the same data and
the same table: a plain aiokafka consumer group that only does json.loads (and parses two timestamps)
and clickhouse-connect inserts in batches of the same size. Our rate is reported as a ratio of the
baseline's.

One run, against a fresh embedded broker (Tansu) and fresh chdb stores:

1. Produce N events to a topic (aiokafka, acks=all), before any consumer starts.
2. Throughput: start `llmwatch worker` on that topic (once per tuning, each with its own store and
   consumer group), wait until all N rows are queryable, and read ingest times from the table
   (`ingested_at` is set at insert): "incl. startup" runs from process start to the last row,
   "steady" from the first insert to the last. Then the baseline, in a child process of this script
   (a process can open one chdb path only, so every store lives in its own process).
3. Latency: a fresh worker (defaults) on a new topic; after a warm-up, produce at --rate for
   --latency-seconds with `timestamp` = send time and a marker model name, then take p50/p99 of
   dateDiff(timestamp, ingested_at) in SQL. The same for the baseline.
4. Peak RSS (VmHWM) and CPU per thread group of each worker from /proc.
5. With --py-spy, one more defaults worker on the backlog with py-spy attached during its steady
   phase: where the event loop's time goes.

    python benchmarks/ingest.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from llmwatch.traffic import inference_event
from schemas.events import InferenceEvent
from schemas.tables import columns
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics
from streams.settings import Settings, Topics
from streams.store.sql import query, running_worker

REPO = Path(__file__).resolve().parent.parent
RESULTS_HEADER = ("# Benchmarks\n\nBenchmarks: each section names the command and machine; "
                  "ratios are against a baseline measured in the same run.\n")
SECTION_TITLE = "## Ingest: throughput and event-to-queryable latency"
THROUGHPUT_TOPIC = "bench.throughput"
LATENCY_TOPICS = {"llmwatch": "bench.latency.llmwatch", "baseline": "bench.latency.baseline"}
DEFAULT_TUNINGS = ["", "LLMWATCH_INGEST_BATCH_SIZE=10000", "LLMWATCH_INGEST_BATCH_SIZE=20000",
                   "LLMWATCH_METRICS__EMBED_PER_SECOND=0"]
DEFAULTS = Settings.model_construct()
TARGET_RATE = 10_000
TARGET_P99_MS = 2_000
WARMUP_EVENTS = 1_000
POLL_SECONDS = 0.5
PROFILE_HZ = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")

STATS_SQL = """
SELECT count(),
       toUnixTimestamp64Milli(min(ingested_at)),
       toUnixTimestamp64Milli(max(ingested_at)),
       countIf(ingested_at = (SELECT min(ingested_at) FROM inference_events WHERE {where})),
       quantilesExact(0.5, 0.99)(dateDiff('millisecond', timestamp, ingested_at)),
       max(dateDiff('millisecond', timestamp, ingested_at))
FROM inference_events WHERE {where}
"""


@dataclass(frozen=True)
class TableStats:
    """What the table says about the rows matching one filter; times are epoch milliseconds."""

    rows: int
    first_ms: int
    last_ms: int
    first_insert_rows: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TableStats:
        rows, first_ms, last_ms, first_insert_rows, (p50, p99), max_ms = row
        return cls(int(rows), int(first_ms), int(last_ms), int(first_insert_rows), float(p50), float(p99),
                   float(max_ms))

    def rate_since(self, start_ms: float) -> float:
        return self.rows / max((self.last_ms - start_ms) / 1000, 1e-3)

    @property
    def steady_rate(self) -> float:
        """Rows after the first insert over the time from the first insert to the last (NaN: one insert)."""
        if self.rows == self.first_insert_rows:
            return math.nan
        return (self.rows - self.first_insert_rows) / max((self.last_ms - self.first_ms) / 1000, 1e-3)


@dataclass(frozen=True)
class CpuSample:
    wall: float
    seconds: dict[str, float]


@dataclass
class Run:
    """One measured consumer: a worker tuning or the baseline, in the throughput or latency phase."""

    system: str
    config: str
    started_ms: float
    stats: TableStats
    cpu: dict[str, float]
    peak_rss_kib: int
    produced_rate: float = 0.0

    @property
    def startup_rate(self) -> float:
        return self.stats.rate_since(self.started_ms)


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


@dataclass
class Results:
    args: argparse.Namespace
    command: str
    produce_rate: float = 0.0
    event_bytes: int = 0
    throughput: list[Run] = field(default_factory=list)
    latency: list[Run] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)


# /proc readings -------------------------------------------------------------------------------------

def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread group: the event loop (the main thread), other Python threads (they keep
    the name the process had when they started: the interpreter's, or Faust's process title) and
    ClickHouse's own threads (chdb names them)."""
    python_names = {Path(f"/proc/{pid}/comm").read_text().strip(), Path(sys.executable).name[:15]}
    groups = {"event loop": 0.0, "other python threads": 0.0, "clickhouse threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        if int(task.name) == pid:
            groups["event loop"] += seconds
        elif comm in python_names:
            groups["other python threads"] += seconds
        else:
            groups["clickhouse threads"] += seconds
    return groups


def cpu_share(first: CpuSample, last: CpuSample) -> dict[str, float]:
    """Percent of one core per group (and in total) between two samples."""
    wall = max(last.wall - first.wall, 1e-3)
    share = {name: 100 * (last.seconds[name] - first.seconds.get(name, 0.0)) / wall for name in last.seconds}
    share["total"] = sum(share.values())
    return share


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# producing ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_producer(bootstrap: str, linger_ms: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms,
                            max_batch_size=1 << 20, max_request_size=8 << 20)


async def produce_backlog(bootstrap: str, topic: str, count: int, seed: int) -> float:
    """Send `count` realistic events as fast as the broker takes them; returns events/s."""
    rng = random.Random(seed)
    producer = make_producer(bootstrap, linger_ms=20)
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for _ in range(count):
            event = inference_event(rng)
            pending.append(await producer.send(topic, event.model_dump_json().encode(),
                                               key=event.partition_key.encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count / (time.perf_counter() - started)


async def produce_at_rate(bootstrap: str, topic: str, rate: float, seconds: float, model: str, seed: int) -> float:
    """Send rate x seconds events, paced every 10 ms, each stamped with its send time; returns the rate kept."""
    rng = random.Random(seed)
    total = round(rate * seconds)
    producer = make_producer(bootstrap, linger_ms=0)
    await producer.start()
    sent = 0
    started = time.perf_counter()
    try:
        pending = []
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            for _ in range(due - sent):
                event = inference_event(rng)
                now = datetime.now(UTC)
                event = event.model_copy(update={
                    "model": model, "timestamp": now,
                    "completed_at": now + timedelta(milliseconds=event.latency_ms),
                })
                pending.append(await producer.send(topic, event.model_dump_json().encode(),
                                                   key=event.partition_key.encode()))
            sent = due
            await asyncio.sleep(0.01)
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return total / elapsed


# our worker -----------------------------------------------------------------------------------------

def parse_tuning(tuning: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in tuning.split(",") if item)


class Worker:
    """`llmwatch worker` as a child process with its own store, consumer group and web port."""

    def __init__(self, bootstrap: str, topic: str, workdir: Path, label: str, tuning: str) -> None:
        self.data_dir = workdir / label
        self.settings = Settings(data_dir=self.data_dir, kafka_bootstrap_servers=bootstrap,
                                 topics=Topics(inference=topic))
        self.env = os.environ | {
            "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LLMWATCH_DATA_DIR": str(self.data_dir),
            "LLMWATCH_TOPICS__INFERENCE": topic,
            "LLMWATCH_APP_ID": f"bench-{label}-{uuid.uuid4().hex[:8]}",
            "LLMWATCH_WEB_PORT": str(free_port()),
        } | parse_tuning(tuning)
        self.log = self.data_dir / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_ms = 0.0

    def start(self, timeout: float = 180.0) -> None:
        """Returns once the worker owns its store and answers (it has written worker.json)."""
        self.data_dir.mkdir(parents=True)
        self.started_ms = time.time() * 1000
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "llmwatch", "worker"], cwd=REPO, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while (info := running_worker(self.settings)) is None or info["pid"] != self.process.pid:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not become ready; see {self.log}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def sql(self, sql: str) -> list[Any]:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the worker is not running (it owns the store); see {self.log}")
        return query(self.settings, sql).rows[0]

    async def wait_rows(self, where: str, expect: int, timeout: float) -> tuple[CpuSample, CpuSample]:
        """Poll until `expect` rows match; returns CPU samples at the first poll that saw rows and the last."""
        first: CpuSample | None = None
        deadline = time.monotonic() + timeout
        while True:
            rows = int((await asyncio.to_thread(self.sql, f"SELECT count() FROM inference_events WHERE {where}"))[0])
            sample = CpuSample(time.monotonic(), thread_cpu(self.pid))
            if rows and first is None:
                first = sample
            if rows >= expect:
                return first or sample, sample
            if time.monotonic() > deadline:
                raise TimeoutError(f"{rows} of {expect} rows after {timeout:.0f} s; see {self.log}")
            await asyncio.sleep(POLL_SECONDS)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            print(f"  worker ignored SIGTERM for {timeout:.0f} s and was killed; see {self.log}", file=sys.stderr)


async def worker_throughput(bootstrap: str, workdir: Path, events: int, tuning: str, label: str) -> Run:
    worker = Worker(bootstrap, THROUGHPUT_TOPIC, workdir, label, tuning)
    worker.start()
    try:
        first, last = await worker.wait_rows("1", events, timeout=max(120.0, events / 200))
        stats = TableStats.from_row(worker.sql(STATS_SQL.format(where="1")))
        run = Run("llmwatch worker", tuning or "defaults", worker.started_ms, stats, cpu_share(first, last),
                  peak_rss_kib(worker.pid))
    finally:
        worker.stop()
    return run


async def worker_latency(bootstrap: str, workdir: Path, rate: float, seconds: float, marker: str) -> Run:
    worker = Worker(bootstrap, LATENCY_TOPICS["llmwatch"], workdir, "latency", "")
    where = f"model = '{marker}'"
    worker.start()
    try:
        await produce_backlog(bootstrap, LATENCY_TOPICS["llmwatch"], WARMUP_EVENTS, seed=11)
        await worker.wait_rows("1", WARMUP_EVENTS, timeout=120)
        cpu_before = CpuSample(time.monotonic(), thread_cpu(worker.pid))
        produced = await produce_at_rate(bootstrap, LATENCY_TOPICS["llmwatch"], rate, seconds, marker, seed=12)
        _, cpu_after = await worker.wait_rows(where, round(rate * seconds), timeout=120)
        stats = TableStats.from_row(worker.sql(STATS_SQL.format(where=where)))
        run = Run("llmwatch worker", "defaults", worker.started_ms, stats, cpu_share(cpu_before, cpu_after),
                  peak_rss_kib(worker.pid), produced)
    finally:
        worker.stop()
    return run


async def worker_profile(bootstrap: str, workdir: Path, events: int, py_spy: str) -> list[str]:
    """A defaults worker on the backlog with py-spy attached from its first row to its last."""
    worker = Worker(bootstrap, THROUGHPUT_TOPIC, workdir, "profiled", "")
    raw = workdir / "py-spy.txt"
    worker.start()
    try:
        await worker.wait_rows("1", 1, timeout=120)
        spy = subprocess.Popen([py_spy, "record", "--pid", str(worker.pid), "--rate", str(PROFILE_HZ), "--threads",
                                "--format", "raw", "--output", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        await worker.wait_rows("1", events, timeout=max(120.0, events / 200))
        seconds = time.monotonic() - started
        spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled, then exits
        spy.wait(60)
    finally:
        worker.stop()
    return summarize_profile(raw, seconds)


def summarize_profile(raw: Path, seconds: float, top: int = 15) -> list[str]:
    """Markdown: % of a core per thread (samples on CPU), then the event loop's heaviest frames."""
    per_thread: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *frames = stack.split(";")
        name = thread.partition(": ")[2] or thread
        per_thread[name] += int(count)
        if name == "MainThread" and frames:
            functions = [re.sub(r":\d+\)$", ")", frame) for frame in frames]
            for function in set(functions):
                inclusive[function] += int(count)
            own[functions[-1]] += int(count)
    core = PROFILE_HZ * seconds
    main = per_thread["MainThread"]
    lines = ["Threads, % of one core that py-spy did not judge idle (waiting for the GIL counts as busy): " + ", ".join(
        f"{name} {100 * n / core:.0f}%" for name, n in per_thread.most_common() if 100 * n / core >= 1) + ".", "",
        "| event-loop frame (py-spy, not idle) | inclusive | self |", "|---|---:|---:|"]
    shown = [(f, n) for f, n in inclusive.most_common() if n < 0.9 * main][:top]  # skip the entry chain
    lines += [f"| `{f}` | {100 * n / main:.0f}% | {100 * own[f] / main:.0f}% |" for f, n in shown]
    return lines


# the baseline ---------------------------------------------------------------------------------------

COLUMNS = columns(InferenceEvent)


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


async def baseline_consume(config: BaselineConfig) -> None:
    """The child process: consume, insert, commit; one JSON line per insert, then a result line."""
    from streams.settings import Retention
    from streams.store.client import connect, migrate
    from streams.store.sql import run_query

    client = connect(f"chdb://{config.store_dir}")
    migrate(client, Retention())  # the very tables the worker writes to
    consumer = AIOKafkaConsumer(
        config.topic, bootstrap_servers=config.bootstrap, group_id=config.group, auto_offset_reset="earliest",
        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000,
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
    """This script in --baseline-worker mode, as a child process; it owns its own chdb store."""

    def __init__(self, config: BaselineConfig, log: Path) -> None:
        self.config = config
        self.log = log
        self.started_ms = 0.0
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.started_ms = time.time() * 1000
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--baseline-worker", json.dumps(asdict(self.config)), cwd=REPO,
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

    async def finish(self, system: str, produced_rate: float = 0.0) -> Run:
        result = await self.wait_for(lambda m: "stats" in m, timeout=max(120.0, self.config.expect / 500))
        assert self.process is not None
        await self.process.wait()
        return Run(system, f"batch {self.config.batch_size}, flush {self.config.flush_seconds:g} s",
                   self.started_ms, TableStats.from_row(result["stats"]), {"total": result["cpu_percent"]},
                   int(result["peak_rss_kib"]), produced_rate)


def baseline_config(bootstrap: str, topic: str, workdir: Path, label: str, expect: int, where: str) -> BaselineConfig:
    return BaselineConfig(bootstrap, topic, f"bench-{label}-{uuid.uuid4().hex[:8]}",
                          str(workdir / label / "clickhouse"), expect, where, DEFAULTS.ingest_batch_size,
                          DEFAULTS.ingest_flush_seconds)


async def baseline_throughput(bootstrap: str, workdir: Path, events: int) -> Run:
    baseline = Baseline(baseline_config(bootstrap, THROUGHPUT_TOPIC, workdir, "baseline", events, "1"),
                        workdir / "baseline.log")
    await baseline.start()
    return await baseline.finish("baseline")


async def baseline_latency(bootstrap: str, workdir: Path, rate: float, seconds: float, marker: str) -> Run:
    topic = LATENCY_TOPICS["baseline"]
    config = baseline_config(bootstrap, topic, workdir, "baseline-latency", WARMUP_EVENTS + round(rate * seconds),
                             f"model = '{marker}'")
    baseline = Baseline(config, workdir / "baseline-latency.log")
    await baseline.start()
    await produce_backlog(bootstrap, topic, WARMUP_EVENTS, seed=11)
    await baseline.wait_for(lambda m: m.get("inserted", 0) >= WARMUP_EVENTS, timeout=120)
    produced = await produce_at_rate(bootstrap, topic, rate, seconds, marker, seed=12)
    return await baseline.finish("baseline", produced)


# report ---------------------------------------------------------------------------------------------

def machine() -> str:
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return (f"{os.cpu_count()} cores ({cpu}), {mem_kib / 1024**2:.1f} GiB RAM, Python {platform.python_version()}, "
            f"Linux {platform.release()}")


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def cpu_text(cpu: dict[str, float]) -> str:
    parts = [f"{cpu['total']:.0f}% total"]
    parts += [f"{name} {share:.0f}%" for name, share in cpu.items() if name != "total"]
    return ", ".join(parts)


def verdict(ok: bool, miss: str) -> str:
    return "**met**" if ok else f"**missed**: {miss}"


def render(results: Results) -> str:
    args = results.args
    baseline = next(run for run in results.throughput if run.system == "baseline")
    ours = [run for run in results.throughput if run.system != "baseline"]
    default = ours[0]
    best = max(ours, key=lambda run: run.stats.steady_rate)
    lines = [
        SECTION_TITLE, "",
        f"Run on {datetime.now(UTC):%Y-%m-%d}: {machine()}. Code: {code_state()}. Broker: embedded Tansu "
        "(memory storage) on loopback; store: chdb (in-process ClickHouse), one fresh store per consumer.", "",
        f"    {results.command}", "",
        f"N = {args.events:,} inference events (~{results.event_bytes} bytes each, keyed by model:adapter, "
        f"{Topics().partitions} partitions), produced before any consumer starts "
        f"(aiokafka, acks=all: {results.produce_rate:,.0f} events/s). "
        "Rates come from the table: `ingested_at` (set at insert) of the first and last row; "
        "*incl. startup* counts from process start (imports, store migration, group join), *steady* from the "
        "first insert to the last, not counting the first insert's rows. CPU is % of one core over the steady "
        "phase (polls every 0.5 s), per thread group, from /proc; this machine has "
        f"{os.cpu_count()} cores. Peak RSS is VmHWM.", "",
        "### Throughput", "",
        "| consumer | config | incl. startup (events/s) | steady (events/s) | steady vs baseline | CPU, steady | "
        "peak RSS |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for run in results.throughput:
        lines.append(f"| {run.system} | {run.config} | {run.startup_rate:,.0f} | {run.stats.steady_rate:,.0f} | "
                     f"{run.stats.steady_rate / baseline.stats.steady_rate:.2f}x | {cpu_text(run.cpu)} | "
                     f"{mib(run.peak_rss_kib)} |")
    lines += [
        "",
        f"Baseline: one aiokafka consumer (group, earliest) doing json.loads, two timestamp parses and a "
        f"clickhouse-connect insert of the same {len(COLUMNS)} columns into the same table, in batches of "
        f"{DEFAULTS.ingest_batch_size} or {DEFAULTS.ingest_flush_seconds:g} s, committing after each insert. "
        "No pydantic validation, no dead-lettering, no Faust.", "",
        f"Best tuning: **{best.config}** ({best.stats.steady_rate:,.0f} events/s steady, "
        f"{best.stats.steady_rate / default.stats.steady_rate:.2f}x the defaults).", "",
        "### Event-to-queryable latency", "",
        f"After {WARMUP_EVENTS:,} warm-up events, {args.rate:g} events/s for {args.latency_seconds:g} s, each "
        "stamped `timestamp` = send time; latency = `dateDiff('millisecond', timestamp, ingested_at)` in SQL "
        "over those events (`ingested_at` is taken as the insert runs, so the part's commit, a few ms, is "
        "not included).", "",
        "| consumer | config | events | rate kept (events/s) | p50 (ms) | p99 (ms) | max (ms) | CPU | peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for run in results.latency:
        lines.append(f"| {run.system} | {run.config} | {run.stats.rows:,} | {run.produced_rate:,.0f} | "
                     f"{run.stats.p50_ms:,.0f} | {run.stats.p99_ms:,.0f} | {run.stats.max_ms:,.0f} | "
                     f"{cpu_text(run.cpu)} | {mib(run.peak_rss_kib)} |")
    latency = next(run for run in results.latency if run.system != "baseline")
    rate = default.stats.steady_rate
    lines += [
        "", "### Targets", "",
        f"- Sustained >= {TARGET_RATE:,} events/s (defaults, steady): {rate:,.0f} events/s: "
        + verdict(rate >= TARGET_RATE, f"{TARGET_RATE / rate:.1f}x short ({TARGET_RATE - rate:,.0f} events/s); "
                  f"best tuning {best.stats.steady_rate:,.0f} events/s"),
        f"- p99 event-to-queryable < {TARGET_P99_MS:,} ms at {args.rate:g} events/s: {latency.stats.p99_ms:,.0f} ms: "
        + verdict(latency.stats.p99_ms < TARGET_P99_MS, f"by {latency.stats.p99_ms - TARGET_P99_MS:,.0f} ms"),
        "",
        f"CPU per stored event (defaults, steady): {cpu_per_event_us(default):,.0f} µs for the worker, "
        f"{cpu_per_event_us(baseline):,.0f} µs for the baseline; the event-loop thread alone "
        f"{default.cpu['event loop'] * 10_000 / default.stats.steady_rate:,.0f} µs.",
    ]
    if results.profile:
        lines += ["", "### Where the worker's time goes", "",
                  f"A further defaults worker on the same backlog, py-spy ({PROFILE_HZ} Hz, `--threads`) attached "
                  "from its first row to its last; its rate is slowed by the sampling and not reported.", "",
                  *results.profile]
    return "\n".join(lines) + "\n"


def code_state() -> str:
    """The commit measured, and how many files differed from it (others may be editing the tree)."""
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = len(git("status", "--porcelain", "--untracked-files=all", "--", ".", ":!benchmarks").splitlines())
    return f"commit {commit}" + (f" with {changed} changed or new files outside benchmarks/" if changed else "")


def cpu_per_event_us(run: Run) -> float:
    return run.cpu["total"] * 10_000 / run.stats.steady_rate


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section in the results file (other sections stay), or append it."""
    text = path.read_text() if path.exists() else RESULTS_HEADER
    start = text.find(SECTION_TITLE)
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION_TITLE))
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# main -----------------------------------------------------------------------------------------------

async def benchmark(args: argparse.Namespace, workdir: Path) -> Results:
    results = Results(args, shlex.join(["python", "benchmarks/ingest.py", *sys.argv[1:]]))
    marker = f"bench-latency-{uuid.uuid4().hex[:8]}"
    with EmbeddedBroker(free_port(), log_file=workdir / "broker.log") as broker:
        bootstrap = broker.bootstrap_servers
        for topic in (THROUGHPUT_TOPIC, *LATENCY_TOPICS.values()):
            ensure_topics(bootstrap, Topics(inference=topic))
        print(f"producing {args.events:,} events to {THROUGHPUT_TOPIC} on {bootstrap}", file=sys.stderr)
        results.produce_rate = await produce_backlog(bootstrap, THROUGHPUT_TOPIC, args.events, seed=7)
        results.event_bytes = len(inference_event(random.Random(7)).model_dump_json())
        print(f"  {results.produce_rate:,.0f} events/s", file=sys.stderr)
        for n, tuning in enumerate(args.tunings):
            print(f"throughput: llmwatch worker, {tuning or 'defaults'}", file=sys.stderr)
            results.throughput.append(await worker_throughput(bootstrap, workdir, args.events, tuning, f"worker{n}"))
            print(f"  steady {results.throughput[-1].stats.steady_rate:,.0f} events/s", file=sys.stderr)
        print("throughput: baseline", file=sys.stderr)
        results.throughput.append(await baseline_throughput(bootstrap, workdir, args.events))
        print(f"  steady {results.throughput[-1].stats.steady_rate:,.0f} events/s", file=sys.stderr)
        print(f"latency: llmwatch worker, {args.rate:g} events/s for {args.latency_seconds:g} s", file=sys.stderr)
        results.latency.append(await worker_latency(bootstrap, workdir, args.rate, args.latency_seconds, marker))
        print(f"  p99 {results.latency[-1].stats.p99_ms:,.0f} ms", file=sys.stderr)
        print("latency: baseline", file=sys.stderr)
        results.latency.append(await baseline_latency(bootstrap, workdir, args.rate, args.latency_seconds, marker))
        print(f"  p99 {results.latency[-1].stats.p99_ms:,.0f} ms", file=sys.stderr)
        if args.py_spy:
            print("profile: llmwatch worker, defaults, py-spy attached from the first row to the last", file=sys.stderr)
            results.profile = await worker_profile(bootstrap, workdir, args.events, args.py_spy)
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure `llmwatch worker` ingest throughput and event-to-queryable latency against a "
        "plain aiokafka + clickhouse-connect baseline, on a fresh embedded broker and fresh chdb stores.",
        epilog="Targets: >= 10,000 events/s sustained; p99 event-to-queryable < 2 s at 1,000 events/s.",
    )
    parser.add_argument("--events", type=int, default=200_000,
                        help="events for the throughput phase (default %(default)s)")
    parser.add_argument("--rate", type=float, default=1000, help="events/s in the latency phase (default %(default)s)")
    parser.add_argument("--latency-seconds", type=float, default=30,
                        help="how long the latency phase produces (default %(default)s)")
    parser.add_argument("--tunings", nargs="*", default=DEFAULT_TUNINGS, metavar="ENV",
                        help="worker environments to measure, each 'NAME=VALUE[,NAME=VALUE]' ('' = defaults, "
                        "always measured first); default: %(default)s")
    parser.add_argument("--out", type=Path, help="write the markdown section into this file (replacing an older "
                        "one); default: print it")
    parser.add_argument("--py-spy", metavar="EXE", help="also profile one more defaults worker with this py-spy "
                        "(attached during its steady phase; not used for the rates)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (stores and logs)")
    parser.add_argument("--baseline-worker", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.tunings = ["", *(t for t in args.tunings if t)]
    return args


def main() -> None:
    args = parse_args()
    if args.baseline_worker:
        asyncio.run(baseline_consume(BaselineConfig(**json.loads(args.baseline_worker))))
        return
    workdir = Path(tempfile.mkdtemp(prefix="llmwatch-bench-"))
    print(f"work directory: {workdir}", file=sys.stderr)
    try:
        section = render(asyncio.run(benchmark(args, workdir)))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        write_section(args.out, section)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(section)


if __name__ == "__main__":
    main()

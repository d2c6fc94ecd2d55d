"""What the benchmarks run and read back: producers, `llmwatch worker` as a child process, the stored rows.

Shared by the benchmarks so that every arm gets the same events the same way (keyed where
`schemas.topics.destination` says, on topics of its own), the worker is started and stopped the same way
(with its children: an orphaned embedder would hold memory and a core into the next arm), and rates come
from the same SQL. How it is measured is in benchmarks/common.py. Not run on its own; used by

    python benchmarks/ingest.py --out benchmarks/RESULTS.md
    python benchmarks/processors.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from benchmarks.common import (
    REPO,
    Contention,
    CpuSample,
    cmdline,
    descendants,
    embedder_pid,
    free_port,
    log,
    peak_rss_kib,
)
from llmwatch.traffic import feedback_for, inference_event
from schemas.events import Event, InferenceEvent
from schemas.topics import Topics, destination
from streams.settings import Settings
from streams.store.sql import query, running_worker

POLL_SECONDS = 0.5
FEEDBACK_DELAY_SECONDS = 2.0


# producing -----------------------------------------------------------------------------------------------

def bench_topics(prefix: str, **shared: str) -> Topics:
    """Topics of an arm's own, but for those named in `shared` (e.g. the inference topic that holds the backlog):
    a worker ingests the metrics topic, so it must not see another arm's points."""
    names = [name for name in Topics.model_fields if name not in ("partitions", "replication_factor")]
    return Topics.model_validate({name: f"{prefix}.{name}" for name in names} | shared)


def make_producer(bootstrap: str, linger_ms: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms,
                            max_batch_size=1 << 20, max_request_size=8 << 20)


def at_time(event: InferenceEvent, moment: datetime) -> InferenceEvent:
    return event.model_copy(update={"timestamp": moment,
                                    "completed_at": moment + timedelta(milliseconds=event.latency_ms)})


class Sender:
    """aiokafka producer that sends each event where `destination` says, with a bounded number in flight."""

    def __init__(self, bootstrap: str, topics: Topics, linger_ms: int) -> None:
        self.topics = topics
        self.producer = make_producer(bootstrap, linger_ms=linger_ms)
        self.pending: list[asyncio.Future[Any]] = []

    async def __aenter__(self) -> Sender:
        await self.producer.start()
        return self

    async def send(self, event: Event) -> None:
        topic, key = destination(event, self.topics)
        self.pending.append(await self.producer.send(topic, event.model_dump_json().encode(), key=key))
        if len(self.pending) >= 20_000:
            await self.flush()

    async def flush(self) -> None:
        await asyncio.gather(*self.pending)
        self.pending.clear()

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.flush()
        finally:
            await self.producer.stop()


@dataclass
class Produced:
    inference: int = 0
    feedback: int = 0
    started: float = 0.0  # epoch seconds
    ended: float = 0.0

    @property
    def rate(self) -> float:
        return self.inference / max(self.ended - self.started, 1e-3)


async def send_pair(sender: Sender, event: InferenceEvent, rng: random.Random, feedback_ratio: float,
                    feedback_at: datetime | None) -> int:
    """The event, and with probability feedback_ratio feedback on it; returns the feedback events sent."""
    await sender.send(event)
    if rng.random() >= feedback_ratio:
        return 0
    feedback = feedback_for(event, rng)
    if feedback_at is not None:
        feedback = feedback.model_copy(update={"timestamp": feedback_at})
    await sender.send(feedback)
    return 1


async def produce_timeline(bootstrap: str, topics: Topics, count: int, feedback_ratio: float, start: datetime,
                           rate: float, seed: int, feedback_delay: float = FEEDBACK_DELAY_SECONDS) -> Produced:
    """Backlog: event i has timestamp start + i/rate; its feedback `feedback_delay` later."""
    rng = random.Random(seed)
    produced = Produced(started=time.time())
    async with Sender(bootstrap, topics, linger_ms=20) as sender:
        for i in range(count):
            moment = start + timedelta(seconds=i / rate)
            event = at_time(inference_event(rng), moment)
            produced.feedback += await send_pair(sender, event, rng, feedback_ratio,
                                                 moment + timedelta(seconds=feedback_delay))
            produced.inference += 1
    produced.ended = time.time()
    return produced


async def produce_paced(bootstrap: str, topics: Topics, rate: float, seconds: float, feedback_ratio: float,
                        seed: int) -> Produced:
    """rate x seconds events, paced every 10 ms, `timestamp` = send time; feedback sent right after its event."""
    rng = random.Random(seed)
    total = round(rate * seconds)
    produced = Produced(started=time.time())
    started = time.perf_counter()
    async with Sender(bootstrap, topics, linger_ms=0) as sender:
        while produced.inference < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            for _ in range(due - produced.inference):
                event = at_time(inference_event(rng), datetime.now(UTC))
                produced.feedback += await send_pair(sender, event, rng, feedback_ratio, None)
                produced.inference += 1
            await asyncio.sleep(0.01)
    produced.ended = time.time()
    return produced


# the worker ----------------------------------------------------------------------------------------------

def parse_tuning(tuning: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in tuning.split(",") if item)


def topic_env(topics: Topics) -> dict[str, str]:
    return {f"LLMWATCH_TOPICS__{name.upper()}": str(value) for name, value in topics.model_dump().items()}


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports: `llmwatch worker --processes N` serves web_port + 0..N-1."""
    while True:
        first = free_port()
        try:
            for port in range(first + 1, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first


class Worker:
    """`llmwatch worker` as a child process with its own store, topics, consumer group and web port; with
    LLMWATCH_WORKER_PROCESSES=N in its tuning, N processes in one group (the first owns the store)."""

    def __init__(self, bootstrap: str, topics: Topics, workdir: Path, label: str, tuning: str = "") -> None:
        self.data_dir = workdir / label
        self.settings = Settings(data_dir=self.data_dir, kafka_bootstrap_servers=bootstrap, topics=topics)
        tuned = parse_tuning(tuning)
        self.processes = int(tuned.get("LLMWATCH_WORKER_PROCESSES", "1"))
        self.web_port = free_ports(self.processes)
        self.env = os.environ | topic_env(topics) | {
            "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LLMWATCH_DATA_DIR": str(self.data_dir),
            "LLMWATCH_APP_ID": f"bench-{label}-{uuid.uuid4().hex[:8]}",
            "LLMWATCH_WEB_PORT": str(self.web_port),
        } | tuned
        self.log = self.data_dir / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_ms = 0.0
        self.url = ""

    def start(self, timeout: float = 240.0) -> None:
        """Returns once the worker owns its store and answers (it has written worker.json)."""
        self.data_dir.mkdir(parents=True)
        self.started_ms = time.time() * 1000
        with self.log.open("wb") as output:
            self.process = subprocess.Popen([sys.executable, "-m", "llmwatch", "worker"], cwd=REPO, env=self.env,
                                            stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while (info := running_worker(self.settings)) is None or info["pid"] != self.process.pid:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not become ready; see {self.log}")
            time.sleep(0.1)
        self.url = info["url"]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu(self) -> CpuSample:
        return CpuSample.of_worker(self.pid)

    def peak_rss_kib(self) -> int:
        """VmHWM of the worker plus that of its embedder (each process's own peak; they need not coincide)."""
        embedder = embedder_pid(self.pid)
        return peak_rss_kib(self.pid) + (peak_rss_kib(embedder) if embedder else 0)

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/llmwatch/health", timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def healths(self) -> list[dict[str, Any]]:
        """/llmwatch/health of every process that answers (the others are starting, or were ended)."""
        found = []
        for port in range(self.web_port, self.web_port + self.processes):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/llmwatch/health", timeout=10) as response:
                    found.append(json.loads(response.read()))
            except OSError:
                continue
        return found

    def query(self, sql: str) -> list[list[Any]]:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the worker is not running (it owns the store); see {self.log}")
        return query(self.settings, sql).rows

    def sql(self, sql: str) -> list[Any]:
        """The first row."""
        return self.query(sql)[0]

    async def wait_rows(self, where: str, expect: int, timeout: float) -> tuple[CpuSample, CpuSample]:
        """Poll until `expect` rows match; returns CPU samples at the first poll that saw rows and the last."""
        first: CpuSample | None = None
        deadline = time.monotonic() + timeout
        while True:
            rows = int((await asyncio.to_thread(self.sql, f"SELECT count() FROM inference_events WHERE {where}"))[0])
            sample = self.cpu()
            if rows and first is None:
                first = sample
            if rows >= expect:
                return first or sample, sample
            if time.monotonic() > deadline:
                raise TimeoutError(f"{rows} of {expect} rows after {timeout:.0f} s; see {self.log}")
            await asyncio.sleep(POLL_SECONDS)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then end any child that outlived the worker: an orphaned embedder would hold a core's
        worth of memory and CPU into the next arm."""
        if self.process is None or self.process.poll() is not None:
            return
        left = {pid: cmdline(pid) for pid in descendants(self.pid)}
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            log(f"  worker ignored SIGTERM for {timeout:.0f} s and was killed; see {self.log}")
        grace = time.monotonic() + 10
        while time.monotonic() < grace and any(line and cmdline(pid) == line for pid, line in left.items()):
            time.sleep(0.2)
        for pid, line in left.items():
            if line and cmdline(pid) == line:
                log(f"  the worker's child {pid} outlived it; ending it")
                os.kill(pid, signal.SIGTERM)
                for _ in range(50):
                    if not cmdline(pid):
                        break
                    time.sleep(0.1)
                else:
                    os.kill(pid, signal.SIGKILL)


# what the table says -------------------------------------------------------------------------------------

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


@dataclass
class Run:
    """One measured consumer: a worker tuning or the baseline, in a throughput or latency arm."""

    system: str
    config: str
    started_ms: float
    stats: TableStats
    cpu: dict[str, float]
    peak_rss_kib: int
    produced_rate: float = 0.0
    contention: Contention | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def startup_rate(self) -> float:
        return self.stats.rate_since(self.started_ms)

    @property
    def cpu_per_event_us(self) -> float:
        """All the consumer's CPU (for the worker: with its embedder) per stored event, steady phase."""
        return self.cpu["total"] * 10_000 / self.stats.steady_rate

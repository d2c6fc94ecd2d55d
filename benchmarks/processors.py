"""Processors benchmark: all processors of `llmwatch worker` at once, event-to-metric latency, memory, and the
cost of each processor on its own.

Why it exists: llmwatch promises that one worker process sustains >= 10,000 inference events/s through all
its processors together (validation, per-event scoring, sampled embedding for drift, the window job with
every metric family) into ClickHouse; that a window's metrics are queryable < 2 s (p99) after the window
closes at 1,000 events/s; and that its memory stays under 1.5 GB and flat over a million events. Absolute
numbers depend on the machine, so every phase runs a baseline beside it in the same run (the plain aiokafka
+ clickhouse-connect consumer of benchmarks/ingest.py, imported from there) and reports ratios; and each
processor is timed alone so that the slowest one is visible.

Phases, against a fresh embedded broker (Tansu) and a fresh chdb store per process:

1. Throughput and memory. Produce N inference events (streams/traffic.py) plus feedback for ~30% of them,
   before any consumer starts. Event timestamps follow a timeline at --timeline-rate events/s that starts
   about when the worker will start, so the window job reads full windows while the backlog is ingested,
   as it would at that rate live (with `timestamp` = production time, every window of the backlog would
   close before the worker started, and the window job would compute empty windows only). Start
   `llmwatch worker` (defaults: drift sampling on), sample every second the RSS of the worker and of its
   embedder child process (/proc VmRSS), its progress (/llmwatch/health) and CPU, until all rows are
   stored; optionally attach py-spy for a while in the steady phase. Then the baseline on the same topic.
2. Event-to-metric latency. A fresh worker; produce at --rate events/s (plus feedback) with `timestamp` =
   send time, for --warmup-seconds + --latency-seconds. For each window that lies wholly in the measured
   part: latency = `ingested_at` of its `requests` metric points - window end (its metric cannot exist
   earlier), and, second view, - the timestamp of the window's last event. The baseline's "metric" is a
   SQL aggregate over its raw rows, so it is queryable when the window's last row is.
3. Per-processor cost, in a child process (no broker; one chdb store): decode, scoring and its parts,
   to_rows, store insert, embedding, and the window job's reads and families on 10-s and 60-s windows.

    python benchmarks/processors.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder is first on sys.path, and this file's name would hide the project's
# `processors` package: the repository root goes first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from benchmarks.ingest import (
    CLK_TCK,
    DEFAULTS,
    RESULTS_HEADER,
    STATS_SQL,
    Baseline,
    CpuSample,
    Run,
    TableStats,
    Worker,
    baseline_config,
    code_state,
    cpu_share,
    cpu_text,
    free_port,
    machine,
    make_producer,
    mib,
    peak_rss_kib,
    thread_cpu,
    verdict,
)
from llmwatch.traffic import feedback_for, inference_event
from schemas.events import FeedbackEvent, InferenceEvent
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics
from streams.settings import Settings, Topics
from streams.store.sql import query, running_worker

REPO = Path(__file__).resolve().parent.parent
SECTION_TITLE = "## Processors: all processors together, event-to-metric latency, memory, per-processor cost"
TARGET_RATE = 10_000
TARGET_P99_MS = 2_000
TARGET_RSS_MIB = 1536  # 1.5 GiB
FEEDBACK_DELAY_SECONDS = 2.0
PROFILE_HZ = 100
RESULT_PREFIX = "RESULT "
T = TypeVar("T")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# topics and the worker ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchTopics:
    """Topics of their own per phase: a worker ingests the metrics topic, so it must not see another's."""

    prefix: str

    @property
    def topics(self) -> Topics:
        return Topics(inference=f"{self.prefix}.inference", feedback=f"{self.prefix}.feedback",
                      metrics=f"{self.prefix}.metrics", deadletter=f"{self.prefix}.deadletter")

    def env(self) -> dict[str, str]:
        topics = self.topics
        return {"LLMWATCH_TOPICS__INFERENCE": topics.inference, "LLMWATCH_TOPICS__FEEDBACK": topics.feedback,
                "LLMWATCH_TOPICS__METRICS": topics.metrics, "LLMWATCH_TOPICS__DEADLETTER": topics.deadletter}


def start_worker(bootstrap: str, topics: BenchTopics, workdir: Path, label: str) -> tuple[Worker, str]:
    """`llmwatch worker` (benchmarks/ingest.py's runner) on these topics; returns it and its health URL."""
    worker = Worker(bootstrap, topics.topics.inference, workdir, label, "")
    worker.env |= topics.env()
    worker.start(timeout=240)
    info = running_worker(worker.settings)
    assert info is not None
    return worker, f"{info['url']}/llmwatch/health"


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def stored(report: dict[str, Any], table: str) -> int:
    return int(report.get("ingest", {}).get(table, {}).get("stored", 0))


# /proc: processes, memory, CPU --------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def descendants(pid: int) -> list[int]:
    found, todo = [], children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def vm_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """utime + stime, and with reaped_children the CPU of the children it has waited for."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = [int(f) for f in stat[stat.rindex(")") + 2:].split()[11:15]]
    return sum(fields if reaped_children else fields[:2]) / CLK_TCK


def embedder_pid(worker_pid: int) -> int | None:
    """The embedder is the worker's spawned ProcessPoolExecutor child (the resource tracker is another)."""
    for pid in descendants(worker_pid):
        line = cmdline(pid)
        if "spawn_main" in line and "resource_tracker" not in line:
            return pid
    return None


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


@dataclass(frozen=True)
class MachineCpu:
    """Busy CPU seconds of the whole machine, and of this benchmark's own process tree, at one moment."""

    wall: float
    busy: float
    ours: float

    @classmethod
    def now(cls) -> MachineCpu:
        """Ours: this process and the children it has reaped (whose own reaped children are included), plus
        every live descendant and what it has reaped."""
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + values[4]  # idle, iowait
        times = os.times()
        ours = times.user + times.system + times.children_user + times.children_system
        ours += sum(process_cpu_seconds(pid, reaped_children=True) for pid in descendants(os.getpid()))
        return cls(time.monotonic(), (sum(values[:8]) - idle) / CLK_TCK, ours)


@dataclass(frozen=True)
class Contention:
    """What else ran on the machine during a phase: cores busy in all, and how many of them were not ours."""

    load: tuple[float, float, float]
    busy_cores: float
    other_cores: float

    @classmethod
    def between(cls, first: MachineCpu, last: MachineCpu) -> Contention:
        wall = max(last.wall - first.wall, 1e-3)
        ours = last.ours - first.ours
        busy = last.busy - first.busy
        return cls(load_average(), busy / wall, max(busy - ours, 0.0) / wall)

    def text(self) -> str:
        flag = " (**contended**: more than 0.3 of a core went to others, so rates here are low)" \
            if self.other_cores > 0.3 else ""
        return (f"load average {self.load[0]:.1f}/{self.load[1]:.1f}/{self.load[2]:.1f} at the end; "
                f"{self.busy_cores:.2f} of {os.cpu_count()} cores busy, {self.other_cores:.2f} of them by "
                f"processes outside this benchmark{flag}")


# producing ----------------------------------------------------------------------------------------------

def at_time(event: InferenceEvent, moment: datetime) -> InferenceEvent:
    return event.model_copy(update={"timestamp": moment,
                                    "completed_at": moment + timedelta(milliseconds=event.latency_ms)})


async def production_seconds(bootstrap: str, count: int, feedback_ratio: float, sample: int = 20_000) -> float:
    """About how long producing `count` events (and their feedback) will take: a sample is produced the same
    way to a topic nobody reads."""
    scratch = BenchTopics("bench.calibration").topics
    ensure_topics(bootstrap, scratch)
    produced = await produce_timeline(bootstrap, scratch, sample, feedback_ratio, datetime.now(UTC), 1000.0, seed=1)
    return (produced.ended - produced.started) / sample * count


@dataclass
class Produced:
    inference: int = 0
    feedback: int = 0
    started: float = 0.0  # epoch seconds
    ended: float = 0.0

    @property
    def rate(self) -> float:
        return self.inference / max(self.ended - self.started, 1e-3)


class Sender:
    """aiokafka producer that keeps a bounded number of sends in flight."""

    def __init__(self, bootstrap: str, linger_ms: int) -> None:
        self.producer = make_producer(bootstrap, linger_ms=linger_ms)
        self.pending: list[asyncio.Future[Any]] = []

    async def __aenter__(self) -> Sender:
        await self.producer.start()
        return self

    async def send(self, topic: str, value: bytes, key: str) -> None:
        self.pending.append(await self.producer.send(topic, value, key=key.encode()))
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


async def send_pair(sender: Sender, topics: Topics, event: InferenceEvent, rng: random.Random, feedback_ratio: float,
                    feedback_at: datetime | None) -> int:
    """The event, and with probability feedback_ratio feedback on it; returns the feedback events sent."""
    await sender.send(topics.inference, event.model_dump_json().encode(), event.partition_key)
    if rng.random() >= feedback_ratio:
        return 0
    feedback = feedback_for(event, rng)
    if feedback_at is not None:
        feedback = feedback.model_copy(update={"timestamp": feedback_at})
    await sender.send(topics.feedback, feedback.model_dump_json().encode(), event.request_id)
    return 1


async def produce_timeline(bootstrap: str, topics: Topics, count: int, feedback_ratio: float, start: datetime,
                           rate: float, seed: int) -> Produced:
    """Backlog: event i has timestamp start + i/rate; its feedback FEEDBACK_DELAY_SECONDS later."""
    rng = random.Random(seed)
    produced = Produced(started=time.time())
    async with Sender(bootstrap, linger_ms=20) as sender:
        for i in range(count):
            moment = start + timedelta(seconds=i / rate)
            event = at_time(inference_event(rng), moment)
            produced.feedback += await send_pair(sender, topics, event, rng, feedback_ratio,
                                                 moment + timedelta(seconds=FEEDBACK_DELAY_SECONDS))
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
    async with Sender(bootstrap, linger_ms=0) as sender:
        while produced.inference < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            for _ in range(due - produced.inference):
                event = at_time(inference_event(rng), datetime.now(UTC))
                produced.feedback += await send_pair(sender, topics, event, rng, feedback_ratio, None)
                produced.inference += 1
            await asyncio.sleep(0.01)
    produced.ended = time.time()
    return produced


# phase 1: throughput and memory -------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """One second of the throughput run."""

    at: float  # seconds since the worker was started
    inference: int
    feedback: int
    worker_kib: int
    embedder_kib: int
    other_kib: int  # further children (multiprocessing's resource tracker)

    @property
    def total_kib(self) -> int:
        return self.worker_kib + self.embedder_kib + self.other_kib


@dataclass
class Throughput:
    events: int
    feedback: int
    produced: Produced
    timeline_rate: float
    timeline_start: float  # epoch seconds
    started_ms: float
    stats: TableStats
    feedback_first_ms: int
    feedback_last_ms: int
    samples: list[Sample]
    cpu: dict[str, float]
    embedder_cpu: float
    peak_worker_kib: int
    peak_embedder_kib: int
    embedded: int
    windows: list[list[Any]]  # window_seconds, windows, points, requests sum, lag p50/max ms, events in them
    contention: Contention
    baseline: Run | None = None
    baseline_contention: Contention | None = None
    profile: list[str] = field(default_factory=list)
    profile_span: tuple[float, float] | None = None  # seconds since worker start

    @property
    def all_events_rate(self) -> float:
        """Inference and feedback rows over the time from the first insert of either to the last."""
        first = min(self.stats.first_ms, self.feedback_first_ms or self.stats.first_ms)
        last = max(self.stats.last_ms, self.feedback_last_ms)
        return (self.events + self.feedback) / max((last - first) / 1000, 1e-3)

    def rate_between(self, start: float, end: float) -> float:
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2:
            return math.nan
        return (inside[-1].inference - inside[0].inference) / max(inside[-1].at - inside[0].at, 1e-3)


WINDOW_EVENTS_SQL = """
SELECT count() FROM inference_events
WHERE toStartOfInterval(timestamp, toIntervalSecond({seconds})) IN
      (SELECT window_start FROM metric_points WHERE name = 'requests' AND window_seconds = {seconds})
"""

WINDOW_LAG_SQL = """
SELECT window_seconds, uniqExact(window_start), count(), sumIf(value, name = 'requests'),
       quantileExactIf(0.5)(dateDiff('millisecond', window_start + toIntervalSecond(window_seconds), ingested_at),
                            name = 'requests'),
       maxIf(dateDiff('millisecond', window_start + toIntervalSecond(window_seconds), ingested_at), name = 'requests')
FROM metric_points GROUP BY window_seconds ORDER BY window_seconds
"""


class Profiler:
    """py-spy on the worker and its children (--subprocesses), non-blocking, for a fixed time."""

    def __init__(self, exe: str, pid: int, seconds: float, output: Path) -> None:
        self.output = output
        self.seconds = seconds
        self.process = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(PROFILE_HZ), "--subprocesses", "--threads",
             "--nonblocking", "--format", "raw", "--duration", str(round(seconds)), "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self) -> None:
        try:
            self.process.wait(self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(60)


async def throughput(args: argparse.Namespace, bootstrap: str, workdir: Path) -> Throughput:
    topics = BenchTopics("bench.proc")
    ensure_topics(bootstrap, topics.topics)
    estimate = await production_seconds(bootstrap, args.events, args.feedback_ratio)
    timeline_start = datetime.now(UTC) + timedelta(seconds=estimate + args.startup_seconds)
    log(f"producing {args.events:,} events (+~{args.feedback_ratio:.0%} feedback), timestamps from "
        f"{timeline_start:%H:%M:%S} at {args.timeline_rate:,.0f}/s (estimated {estimate:.0f} s to produce)")
    produced = await produce_timeline(bootstrap, topics.topics, args.events, args.feedback_ratio, timeline_start,
                                      args.timeline_rate, seed=7)
    log(f"  {produced.inference:,} + {produced.feedback:,} feedback in {produced.ended - produced.started:.0f} s")
    cpu_before = MachineCpu.now()
    worker, url = start_worker(bootstrap, topics, workdir, "throughput")
    log(f"throughput: worker pid {worker.pid} started in {time.time() - worker.started_ms / 1000:.1f} s")
    samples: list[Sample] = []
    first: tuple[CpuSample, float] | None = None
    profiler: Profiler | None = None
    profile_span: tuple[float, float] | None = None
    embedder: int | None = None
    deadline = time.monotonic() + args.max_seconds
    try:
        while True:
            tick = time.monotonic()
            report = await asyncio.to_thread(health, url)
            embedder = embedder or embedder_pid(worker.pid)
            others = [p for p in descendants(worker.pid) if p != embedder]
            at = time.time() - worker.started_ms / 1000
            sample = Sample(at, stored(report, "inference_events"), stored(report, "feedback_events"),
                            vm_rss_kib(worker.pid), vm_rss_kib(embedder) if embedder else 0,
                            sum(vm_rss_kib(p) for p in others))
            samples.append(sample)
            cpu_now = (CpuSample(time.monotonic(), thread_cpu(worker.pid)),
                       process_cpu_seconds(embedder) if embedder else 0.0)
            if sample.inference and first is None:
                first = cpu_now
            if len(samples) % 15 == 0:
                log(f"  {at:5.0f} s: {sample.inference:,} inference, {sample.feedback:,} feedback stored, "
                    f"RSS {mib(sample.worker_kib)} + embedder {mib(sample.embedder_kib)}")
            if args.py_spy and profiler is None and sample.inference >= args.profile_at * args.events:
                log(f"  py-spy for {args.profile_seconds:g} s")
                profiler = Profiler(args.py_spy, worker.pid, args.profile_seconds, workdir / "py-spy.txt")
                profile_span = (at, at + args.profile_seconds)
            if sample.inference >= args.events and sample.feedback >= produced.feedback:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sample.inference:,} of {args.events:,} events stored after "
                                   f"{args.max_seconds:g} s; see {worker.log}")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        assert first is not None
        cpu = cpu_share(first[0], cpu_now[0])
        embedder_cpu = 100 * (cpu_now[1] - first[1]) / max(cpu_now[0].wall - first[0].wall, 1e-3)
        contention = Contention.between(cpu_before, MachineCpu.now())
        if profiler is not None:
            profiler.finish()
        stats = TableStats.from_row(worker.sql(STATS_SQL.format(where="1")))
        feedback_first, feedback_last = worker.sql(
            "SELECT toUnixTimestamp64Milli(min(ingested_at)), toUnixTimestamp64Milli(max(ingested_at)) "
            "FROM feedback_events")
        embedded = int(worker.sql("SELECT uniqExact(event_id) FROM embeddings")[0])
        windows = query(worker.settings, WINDOW_LAG_SQL).rows
        for row in windows:  # and how many events those windows hold now that all are stored
            row.append(int(worker.sql(WINDOW_EVENTS_SQL.format(seconds=int(row[0])))[0]))
        result = Throughput(
            args.events, produced.feedback, produced, args.timeline_rate, timeline_start.timestamp(),
            worker.started_ms, stats, int(feedback_first), int(feedback_last), samples, cpu, embedder_cpu,
            peak_rss_kib(worker.pid), peak_rss_kib(embedder) if embedder else 0, embedded, windows, contention,
            profile_span=profile_span)
        if profiler is not None and profiler.output.exists():
            result.profile = summarize_profile(profiler.output, args.profile_seconds, worker.pid, embedder)
    finally:
        stop_worker(worker)
    log(f"  steady {result.stats.steady_rate:,.0f} inference events/s")
    log("throughput: baseline")
    cpu_before = MachineCpu.now()
    baseline = Baseline(baseline_config(bootstrap, topics.topics.inference, workdir, "baseline", args.events, "1"),
                        workdir / "baseline.log")
    await baseline.start()
    result.baseline = await baseline.finish("baseline")
    result.baseline_contention = Contention.between(cpu_before, MachineCpu.now())
    log(f"  steady {result.baseline.stats.steady_rate:,.0f} events/s")
    return result


def stop_worker(worker: Worker) -> None:
    """SIGTERM the worker, then end any child of it that outlived it (the embedder must not be orphaned)."""
    if worker.process is None:
        return
    left = {pid: cmdline(pid) for pid in descendants(worker.pid)}
    worker.stop()
    grace = time.monotonic() + 10
    while time.monotonic() < grace and any(cmdline(pid) == line and line for pid, line in left.items()):
        time.sleep(0.2)
    for pid, line in left.items():
        if cmdline(pid) == line and line:
            log(f"  the worker's child {pid} outlived it; ending it")
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not cmdline(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)


_PROCESS = re.compile(r'process (\d+):".*?";')
_THREAD = re.compile(r"thread \((?:0x)?[0-9a-fA-F]+\): ([^;]*)")


def event_loop_work(frames: list[str]) -> list[str]:
    """The frames below the asyncio callback being run: what the event loop spends its time on."""
    for marker in ("Handle._run (asyncio/events.py)", "BaseEventLoop._run_once (asyncio/base_events.py)"):
        if marker in frames:
            return frames[len(frames) - frames[::-1].index(marker):]
    return frames


def summarize_profile(raw: Path, seconds: float, worker: int, embedder: int | None, top: int = 15) -> list[str]:
    """Markdown: % of a core per process and thread (samples on CPU), then the event loop's heaviest frames."""
    per_thread: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    others: dict[str, Counter[str]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        pids = [int(p) for p in _PROCESS.findall(stack)]
        stack = _PROCESS.sub("", stack)
        match = _THREAD.match(stack)
        if not match or not count_text.isdigit():
            continue
        count = int(count_text)
        pid = pids[-1] if pids else worker
        process = "worker" if pid == worker else "embedder" if pid == embedder else f"pid {pid}"
        thread = match[1].strip() or "?"
        per_thread[f"{process} {thread}"] += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack[match.end():].lstrip(";").split(";") if f]
        if process == "worker" and thread == "MainThread" and frames:
            work = event_loop_work(frames)
            for function in set(work):
                inclusive[function] += count
            own[work[-1] if work else "(BaseEventLoop._run_once itself)"] += count
        elif frames:
            ours = [f for f in frames if re.search(r"\((processors|streams|schemas)/", f)]
            label = f"{ours[-1]} ... {frames[-1]}" if ours and ours[-1] != frames[-1] else frames[-1]
            others.setdefault(f"{process} {thread}", Counter())[label] += count
    core = PROFILE_HZ * seconds
    main = per_thread["worker MainThread"] or 1
    lines = ["Threads, % of one core that py-spy found not idle (waiting for the GIL, or for a CPU on a busy "
             "machine, counts as busy; /proc's CPU shares are in the throughput table): " + ", ".join(
        f"{name} {100 * n / core:.0f}%" for name, n in per_thread.most_common() if 100 * n / core >= 1) + ".", "",
        "Worker event loop (MainThread), frames below `Handle._run` (or `_run_once` where no callback ran), "
        "as a share of its samples on CPU:", "",
        "| worker event-loop frame (py-spy, not idle) | inclusive | self |", "|---|---:|---:|"]
    shown = inclusive.most_common(top)
    lines += [f"| `{f}` | {100 * n / main:.0f}% | {100 * own[f] / main:.0f}% |" for f, n in shown]
    lines += ["", "Other threads' heaviest stacks (innermost llmwatch frame ... innermost frame):", ""]
    for name, n in per_thread.most_common():
        if name == "worker MainThread" or 100 * n / core < 5:
            continue
        heaviest = "; ".join(f"`{stack}` {100 * k / n:.0f}%" for stack, k in others.get(name, Counter()).most_common(2))
        lines.append(f"- {name} ({100 * n / core:.0f}% of a core): {heaviest}")
    return lines


# phase 2: event-to-metric latency -----------------------------------------------------------------------

@dataclass(frozen=True)
class WindowLatency:
    seconds: int
    start_ms: int
    events: int
    requests: float  # what the requests metric counted (nan for the baseline)
    last_event_ms: int
    computed_ms: int  # MetricPoint.timestamp (nan-like 0 for the baseline)
    queryable_ms: int

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.seconds * 1000


@dataclass
class Latency:
    system: str
    produced: Produced
    measured_from: float
    windows: list[WindowLatency]
    cpu: str = ""
    peak_rss: str = ""
    contention: Contention | None = None


def window_starts(first: float, last: float, seconds: int) -> list[int]:
    """Start (epoch ms) of every window of `seconds` lying wholly within [first, last] (epoch seconds)."""
    start = math.ceil(first / seconds) * seconds
    return [s * 1000 for s in range(start, int(last) - seconds + 1, seconds)]


def events_sql(seconds: int, first_ms: int, last_ms: int) -> str:
    ms = seconds * 1000
    return (f"SELECT intDiv(toUnixTimestamp64Milli(timestamp), {ms}) * {ms} AS w, count(), "
            "toUnixTimestamp64Milli(max(timestamp)), toUnixTimestamp64Milli(max(ingested_at)) "
            f"FROM inference_events WHERE timestamp >= fromUnixTimestamp64Milli(toInt64({first_ms}), 'UTC') "
            f"AND timestamp < fromUnixTimestamp64Milli(toInt64({last_ms}), 'UTC') GROUP BY w ORDER BY w")


def points_sql(first_ms: int, last_ms: int) -> str:
    return ("SELECT window_seconds, toUnixTimestamp64Milli(window_start), sum(value), "
            "toUnixTimestamp64Milli(max(timestamp)), toUnixTimestamp64Milli(max(ingested_at)) FROM metric_points "
            f"WHERE name = 'requests' AND window_start >= fromUnixTimestamp64Milli(toInt64({first_ms}), 'UTC') "
            f"AND window_start < fromUnixTimestamp64Milli(toInt64({last_ms}), 'UTC') "
            "GROUP BY window_seconds, window_start")


async def latency_worker(args: argparse.Namespace, bootstrap: str, workdir: Path,
                         window_seconds: Sequence[int]) -> Latency:
    topics = BenchTopics("bench.latency")
    ensure_topics(bootstrap, topics.topics)
    worker, _ = start_worker(bootstrap, topics, workdir, "latency")
    try:
        embedder = embedder_pid(worker.pid)
        machine_before = MachineCpu.now()
        cpu_before = CpuSample(time.monotonic(), thread_cpu(worker.pid))
        produced = await produce_paced(bootstrap, topics.topics, args.rate, args.warmup_seconds + args.latency_seconds,
                                       args.feedback_ratio, seed=12)
        measured_from = produced.started + args.warmup_seconds
        expected = {(s, start) for s in window_seconds for start in window_starts(measured_from, produced.ended, s)}
        first_ms, last_ms = int(measured_from * 1000) - 1, int(produced.ended * 1000) + 1
        deadline = time.monotonic() + max(window_seconds) + 60
        while True:  # until every measured window's requests points are stored
            points = {(int(s), int(start)): row for s, start, *row in query(worker.settings,
                                                                            points_sql(first_ms, last_ms)).rows}
            if expected <= points.keys() or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        cpu = cpu_text(cpu_share(cpu_before, CpuSample(time.monotonic(), thread_cpu(worker.pid))))
        contention = Contention.between(machine_before, MachineCpu.now())
        peak = peak_rss_kib(worker.pid) + (peak_rss_kib(embedder) if embedder else 0)
        windows = []
        for s in window_seconds:
            for start, count, last_event, _ in query(worker.settings, events_sql(s, first_ms, last_ms)).rows:
                if (s, int(start)) in expected and (s, int(start)) in points:
                    requests, computed, queryable = points[(s, int(start))]
                    windows.append(WindowLatency(s, int(start), int(count), float(requests), int(last_event),
                                                 int(computed), int(queryable)))
        missing = len(expected) - len(windows)
        if missing:
            log(f"  {missing} measured windows had no requests metric within the wait; see {worker.log}")
    finally:
        stop_worker(worker)
    return Latency("llmwatch worker", produced, measured_from, windows, cpu, f"{mib(peak)} (worker + embedder)",
                   contention)


async def latency_baseline(args: argparse.Namespace, bootstrap: str, workdir: Path,
                           window_seconds: Sequence[int]) -> Latency:
    topics = BenchTopics("bench.latency-baseline")
    ensure_topics(bootstrap, topics.topics)
    total = round(args.rate * (args.warmup_seconds + args.latency_seconds))
    config = baseline_config(bootstrap, topics.topics.inference, workdir, "baseline-latency", total, "1")
    baseline = Baseline(config, workdir / "baseline-latency.log")
    machine_before = MachineCpu.now()
    await baseline.start()
    produced = await produce_paced(bootstrap, topics.topics, args.rate, args.warmup_seconds + args.latency_seconds,
                                   args.feedback_ratio, seed=12)
    run = await baseline.finish("baseline", produced.rate)
    contention = Contention.between(machine_before, MachineCpu.now())
    measured_from = produced.started + args.warmup_seconds
    first_ms, last_ms = int(measured_from * 1000) - 1, int(produced.ended * 1000) + 1
    results = store_queries(Path(config.store_dir), [events_sql(s, first_ms, last_ms) for s in window_seconds],
                            workdir / "store-query.log")
    windows = []
    for s, rows in zip(window_seconds, results, strict=True):
        expected = set(window_starts(measured_from, produced.ended, s))
        windows += [WindowLatency(s, int(start), int(count), math.nan, int(last_event), 0, int(last_ingested))
                    for start, count, last_event, last_ingested in rows if int(start) in expected]
    return Latency("baseline", produced, measured_from, windows, cpu_text({"total": run.cpu["total"]}),
                   mib(run.peak_rss_kib), contention)


def store_queries(store_dir: Path, sqls: list[str], log_file: Path) -> list[list[list[Any]]]:
    """Run queries on a chdb store in a child process (a process can open one chdb path only)."""
    with log_file.open("ab") as errors:
        done = subprocess.run([sys.executable, __file__, "--store-query", json.dumps([str(store_dir), sqls])],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=errors, check=True)
    return child_result(done.stdout)  # type: ignore[no-any-return]


def child_result(stdout: bytes) -> Any:
    lines = [line for line in stdout.decode().splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise RuntimeError("the child process printed no result")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def store_query_child(spec: str) -> None:
    from streams.store.client import connect
    from streams.store.sql import run_query

    store_dir, sqls = json.loads(spec)
    client = connect(f"chdb://{store_dir}")
    try:
        print(RESULT_PREFIX + json.dumps([run_query(client, sql).rows for sql in sqls], default=str), flush=True)
    finally:
        client.close()


# phase 3: per-processor cost ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Cost:
    stage: str  # ingest, embedding, window
    name: str
    n: int  # events (or sentences) it ran on
    seconds: float
    window: int = 0  # window length for window stages
    note: str = ""


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[T, float]:
    """fn's result and its best wall time over `repeat` runs (the machine is shared: the least disturbed)."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return result, min(times)  # type: ignore[return-value]


def component_costs(config: dict[str, Any]) -> dict[str, Any]:
    """The child process: every processor on the same events, one at a time, against one fresh chdb store."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from processors.embedding import _load_model, default_model_path, embedding_rows, encode
    from processors.families.bias import bias_metrics
    from processors.families.drift import EMBEDDING_FIELDS, TEXT_FEATURES, drift_metrics
    from processors.families.feedback import correction_similarity, feedback_metrics
    from processors.families.latency import latency_metrics
    from processors.families.toxicity import toxicity_metrics
    from processors.scoring import Scorers, prompt_text, scored_rows
    from processors.text_signals import GroupLexicon, is_refusal
    from processors.toxicity import load_toxicity_scorer
    from processors.validation import Limits, RawRecord, decode
    from processors.window_job import fetch_feedback, fetch_inference, fetch_reference, fetch_window_embeddings
    from processors.windows import Window, metric_point
    from schemas.events import ScoredInferenceEvent, TextEmbedding
    from schemas.tables import columns, to_rows
    from streams.settings import Retention
    from streams.store.client import connect, migrate

    settings = Settings()
    metrics = settings.metrics
    batch, window_events, embed_events, repeat = (config["batch"], config["window_events"], config["embed_events"],
                                                  config["repeat"])
    longest = max(config["window_seconds"])
    rng = random.Random(config["seed"])
    costs: list[Cost] = []
    info: dict[str, Any] = {}
    now = datetime.now(UTC)
    base = datetime.fromtimestamp(int(now.timestamp()) // 3600 * 3600 - 3600, tz=UTC)  # an hour ago, aligned
    step = timedelta(seconds=longest / window_events)
    events = [at_time(inference_event(rng), base + i * step) for i in range(window_events)]
    feedback = [feedback_for(e, rng).model_copy(update={"timestamp": e.timestamp + timedelta(seconds=0.5)})
                for e in events if rng.random() < config["feedback_ratio"]]
    payloads = [e.model_dump_json().encode() for e in events]
    feedback_payloads = [f.model_dump_json().encode() for f in feedback]
    limits = Limits(settings.max_event_bytes, settings.dead_letter_raw_bytes)
    log(f"components: {window_events:,} events over {longest} s, {len(feedback):,} feedback; batch {batch:,}")

    # ingest path, on the first `batch` events
    records = [RawRecord("llm.inference", 0, i, p) for i, p in enumerate(payloads[:batch])]
    decoded, seconds = timed(lambda: [decode(r, InferenceEvent, limits) for r in records], repeat)
    costs.append(Cost("ingest", "decode + validate (`validation.decode`, pydantic)", batch, seconds))
    sample = [e for e in decoded if isinstance(e, InferenceEvent)]
    scorers = Scorers(load_toxicity_scorer(metrics), metrics.toxicity_threshold,
                      GroupLexicon.load(metrics.group_lexicon), SentimentIntensityAnalyzer())
    _, seconds = timed(lambda: scored_rows(sample, scorers), repeat)
    costs.append(Cost("ingest", "scoring + row building (`scoring.scored_rows`, all of the below)", batch, seconds))
    prompts = [prompt_text(e) for e in sample]
    responses = [e.response_text for e in sample if e.response_text]
    _, seconds = timed(lambda: scorers.toxicity.score(prompts + responses), repeat)
    costs.append(Cost("ingest", f"of which: toxicity ({scorers.toxicity.name}, prompt + response, one call)", batch,
                      seconds))
    _, seconds = timed(lambda: [scorers.sentiment.polarity_scores(r) for r in responses], repeat)
    costs.append(Cost("ingest", "of which: sentiment (VADER `polarity_scores`, responses)", batch, seconds))
    _, seconds = timed(lambda: [scorers.lexicon.groups(p) for p in prompts], repeat)
    costs.append(Cost("ingest", "of which: group lexicon (`GroupLexicon.groups`, prompts)", batch, seconds))
    _, seconds = timed(lambda: [is_refusal(e.response_text) for e in sample], repeat)
    costs.append(Cost("ingest", "of which: refusal regex (`is_refusal`)", batch, seconds))
    _, seconds = timed(lambda: to_rows(sample), repeat)
    costs.append(Cost("ingest", "of which: `schemas.tables.to_rows` (model_dump per event)", batch, seconds))

    store_dir = Path(config["store_dir"])
    client = connect(f"chdb://{store_dir}")
    migrate(client, Retention())
    scored_columns = columns(ScoredInferenceEvent)
    insert_batch = settings.ingest_batch_size

    def insert(table: str, rows: list[list[Any]], names: list[str]) -> None:
        for start in range(0, len(rows), insert_batch):
            client.insert(table, rows[start:start + insert_batch], column_names=names)

    rest = scored_rows(events[batch:], scorers)
    insert("inference_events", rest, scored_columns)  # also warms the store up
    rows = scored_rows(sample, scorers)
    _, seconds = timed(lambda: insert("inference_events", rows, scored_columns))
    costs.append(Cost("ingest", f"store insert (chdb `client.insert`, batches of {insert_batch:,})", batch, seconds))
    feedback_records = [RawRecord("llm.feedback", 0, i, p) for i, p in enumerate(feedback_payloads)]
    feedback_columns = columns(FeedbackEvent)

    feedback_events, seconds = timed(lambda: [decode(r, FeedbackEvent, limits) for r in feedback_records], repeat)
    costs.append(Cost("ingest", "feedback event: decode", len(feedback), seconds, note="per feedback event"))
    feedback_rows, seconds = timed(lambda: to_rows(feedback_events), repeat)  # type: ignore[arg-type]
    costs.append(Cost("ingest", "feedback event: to_rows", len(feedback), seconds, note="per feedback event"))
    _, seconds = timed(lambda: insert("feedback_events", feedback_rows, feedback_columns))
    costs.append(Cost("ingest", "feedback event: store insert", len(feedback), seconds, note="per feedback event"))

    # embedding: the sample the embedder would take at its rate over the longest window
    chosen = sorted(rng.sample(events, min(embed_events, len(events))), key=lambda e: e.timestamp)
    model_path = metrics.embedding_model or default_model_path()
    _, seconds = timed(lambda: _load_model(model_path))
    info["embed_load_seconds"] = seconds
    encode(["warm-up"])
    embedded_rows: list[TextEmbedding] = []
    sentences = 0
    encode_seconds = 0.0
    for start in range(0, len(chosen), 256):  # Embedder.run takes up to 256 events per call
        chunk = chosen[start:start + 256]
        answered = [e for e in chunk if e.response_text]
        texts = [prompt_text(e) for e in chunk] + [e.response_text or "" for e in answered]
        vectors, seconds = timed(lambda texts=texts: encode(texts))
        encode_seconds += seconds
        sentences += len(texts)
        responses_by_id = dict(zip((e.event_id for e in answered), vectors[len(chunk):], strict=True))
        for i, e in enumerate(chunk):
            response = responses_by_id.get(e.event_id)
            embedded_rows += embedding_rows(e, vectors[i].tolist(), None if response is None else response.tolist())
    costs.append(Cost("embedding", "sentence embedding (all-MiniLM-L6-v2, 1 torch thread, `embedding.encode`)",
                      sentences, encode_seconds, note="per sentence"))
    costs.append(Cost("embedding", "the same, per embedded event (prompt + response)", len(chosen), encode_seconds,
                      note="per embedded event"))
    insert("embeddings", to_rows(embedded_rows), columns(TextEmbedding))

    # the window job, per window length: reads, then each family
    attributes = ["cohort", "language", *scorers.lexicon.categories()]

    def window_costs(seconds_long: int, table_note: str) -> None:
        window = Window(base, seconds_long)
        inference, fetch_seconds = timed(lambda: fetch_inference(client, window), repeat)
        n = len(inference)
        costs.append(Cost("window", f"read: `fetch_inference`{table_note}", n, fetch_seconds, seconds_long))
        fb, seconds = timed(lambda: fetch_feedback(client, window), repeat)
        costs.append(Cost("window", f"read: `fetch_feedback` (LEFT JOIN inference_events){table_note}", n, seconds,
                          seconds_long))
        if table_note:
            return
        embeddings, seconds = timed(lambda: fetch_window_embeddings(client, window), repeat)
        costs.append(Cost("window", "read: `fetch_window_embeddings`", n, seconds, seconds_long))
        reference, seconds = timed(lambda: fetch_reference(client, metrics.drift_reference_size), repeat)
        costs.append(Cost("window", "read: `fetch_reference`", n, seconds, seconds_long))
        families: list[tuple[str, Callable[[], list[Any]]]] = [
            ("latency_metrics", lambda: latency_metrics(inference, seconds_long)),
            ("toxicity_metrics", lambda: toxicity_metrics(inference)),
            ("drift_metrics (evidently)", lambda: drift_metrics(
                {f: embeddings[f] for f in EMBEDDING_FIELDS if f in embeddings}, inference[list(TEXT_FEATURES)],
                n, reference, metrics.drift_min_window_samples)),
            ("feedback_metrics", lambda: feedback_metrics(fb)),
            ("bias_metrics", lambda: bias_metrics(inference, fb, attributes, metrics.bias_min_samples)),
        ]
        values: list[Any] = []
        for name, family in families:
            found, seconds = timed(family, repeat)
            values += found
            costs.append(Cost("window", f"family: {name}", n, seconds, seconds_long, note=f"{len(found)} values"))
        computed_at = datetime.now(UTC)
        _, seconds = timed(lambda: [metric_point(window, v, computed_at).model_dump_json() for v in values], repeat)
        costs.append(Cost("window", "metric points: build + JSON (`metric_point`)", n, seconds, seconds_long,
                          note=f"{len(values)} points"))
        info[f"window_{seconds_long}"] = {"events": n, "feedback": len(fb), "embedded": len(
            embeddings.get("prompt", ())), "points": len(values)}

    for seconds_long in sorted(config["window_seconds"]):
        window_costs(seconds_long, "")

    # the same reads once the table holds `grow_to` rows (other days: outside every window)
    copies = max(0, math.ceil(config["grow_to"] / window_events) - 1)
    start_grow = time.perf_counter()
    since = f"toDateTime64('{base:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"
    original = f"timestamp >= {since} AND timestamp < {since} + toIntervalSecond({longest})"
    original_feedback = f"timestamp >= {since} AND timestamp < {since} + toIntervalSecond({longest + 1})"
    for day in range(1, copies + 1):
        # the filter sits in a subquery: in ClickHouse a WHERE beside REPLACE would see the shifted timestamp
        client.command(
            "INSERT INTO inference_events SELECT * REPLACE (generateUUIDv4() AS event_id, "
            f"timestamp - toIntervalDay({day}) AS timestamp, completed_at - toIntervalDay({day}) AS completed_at, "
            f"concat(request_id, '-{day}') AS request_id) FROM (SELECT * FROM inference_events WHERE {original})")
        client.command(
            "INSERT INTO feedback_events SELECT * REPLACE (generateUUIDv4() AS event_id, "
            f"timestamp - toIntervalDay({day}) AS timestamp, concat(request_id, '-{day}') AS request_id) "
            f"FROM (SELECT * FROM feedback_events WHERE {original_feedback})")
    info["grow_seconds"] = time.perf_counter() - start_grow
    info["table_rows"] = int(client.command("SELECT count() FROM inference_events"))
    info["feedback_rows"] = int(client.command("SELECT count() FROM feedback_events"))
    if copies:
        for seconds_long in sorted(config["window_seconds"]):
            window_costs(seconds_long, f", table of {info['table_rows']:,} rows")

    # not in this traffic (feedback_for sends no corrections): what a correction would cost
    pairs = [(e.response_text or "", (e.response_text or "") + " Please be more specific.") for e in events[:500]]
    _, seconds = timed(lambda: [correction_similarity(r, c) for r, c in pairs])
    costs.append(Cost("window", "feedback with a correction: ROUGE-L + BLEU (`correction_similarity`)", len(pairs),
                      seconds, note="per feedback with a correction; none in this traffic"))
    client.close()
    info["peak_rss_kib"] = peak_rss_kib(os.getpid())
    return {"costs": [asdict(c) for c in costs], "info": info, "feedback": len(feedback), "batch": batch,
            "repeat": repeat}


def components(args: argparse.Namespace, workdir: Path, window_seconds: Sequence[int]) -> dict[str, Any]:
    config = {"batch": args.component_events, "window_events": args.window_events, "embed_events": args.embed_events,
              "window_seconds": list(window_seconds), "seed": 21, "feedback_ratio": args.feedback_ratio,
              "repeat": args.repeat, "grow_to": args.grow_table, "store_dir": str(workdir / "components")}
    before = MachineCpu.now()
    with (workdir / "components.log").open("ab") as errors:
        done = subprocess.run([sys.executable, __file__, "--components-worker", json.dumps(config)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=errors, check=False)
    if done.returncode:
        raise RuntimeError(f"the per-processor child failed ({done.returncode}); see {workdir / 'components.log'}")
    result: dict[str, Any] = child_result(done.stdout)
    result["contention"] = Contention.between(before, MachineCpu.now()).text()
    return result


# report -------------------------------------------------------------------------------------------------

@dataclass
class Results:
    args: argparse.Namespace
    command: str
    window_seconds: tuple[int, ...]
    load_before: tuple[float, float, float]
    throughput: Throughput | None = None
    latency: list[Latency] = field(default_factory=list)
    components: dict[str, Any] | None = None


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (with few windows, p99 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else math.nan


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def at_progress(samples: Sequence[Sample], events: int, share: float) -> Sample:
    return next((s for s in samples if s.inference >= share * events), samples[-1])


def render_throughput(result: Throughput, args: argparse.Namespace) -> list[str]:
    baseline = result.baseline
    assert baseline is not None
    rate = result.stats.steady_rate
    total_peak = max(s.total_kib for s in result.samples)
    lines = [
        f"### Throughput and memory over {result.events:,} events", "",
        f"N = {result.events:,} inference events and {result.feedback:,} feedback events "
        f"({result.feedback / result.events:.0%}), produced before any consumer starts (aiokafka, acks=all: "
        f"{result.produced.rate:,.0f} inference events/s with their feedback). Event timestamps run on a timeline "
        f"of {result.timeline_rate:,.0f} events/s that began "
        f"{result.timeline_start - result.stats.first_ms / 1000:+.0f} s from the first stored row, so the window "
        "job reads full 10-s and 60-s windows while the backlog is ingested. Worker: defaults (all processors, "
        f"drift sampling on at {DEFAULTS.metrics.embed_per_second:g} events/s), one process plus its embedder "
        "process. *Steady* is inference rows after the first insert over the time from the first insert to the "
        "last (`ingested_at`), as in the ingest section.", "",
        "| consumer | inference events | incl. startup (events/s) | steady (events/s) | steady vs baseline | "
        "all events incl. feedback (events/s) | CPU, steady | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
        f"| llmwatch worker | {result.events:,} | {result.stats.rate_since(result.started_ms):,.0f} | {rate:,.0f} | "
        f"{rate / baseline.stats.steady_rate:.2f}x | {result.all_events_rate:,.0f} | {cpu_text(result.cpu)}, "
        f"embedder process {result.embedder_cpu:.0f}% | {mib(total_peak)} (worker + embedder, sampled) |",
        f"| baseline | {baseline.stats.rows:,} | {baseline.startup_rate:,.0f} | {baseline.stats.steady_rate:,.0f} | "
        f"1.00x | n/a (inference only) | {cpu_text(baseline.cpu)} | {mib(baseline.peak_rss_kib)} |",
        "",
        f"Machine during the worker: {result.contention.text()}. During the baseline: "
        f"{result.baseline_contention.text() if result.baseline_contention else 'n/a'}.", "",
        "RSS (VmRSS, sampled every second) by progress; *other* is multiprocessing's resource tracker:", "",
        "| progress | at (s since start) | inference stored | worker | embedder | other | total |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    marks = [at_progress(result.samples, result.events, share) for share in (0.0, 0.25, 0.5, 0.75, 1.0)]
    for share, sample in zip(("first row", "25%", "50%", "75%", "100%"), marks, strict=True):
        lines.append(f"| {share} | {sample.at:.0f} | {sample.inference:,} | {mib(sample.worker_kib)} | "
                     f"{mib(sample.embedder_kib)} | {mib(sample.other_kib)} | {mib(sample.total_kib)} |")
    quarter, half, full = marks[1], marks[2], marks[4]
    growth = (full.total_kib - quarter.total_kib) / 1024
    per_100k = growth / max((full.inference - quarter.inference) / 100_000, 1e-9)
    flat = abs(full.total_kib - half.total_kib) <= 0.05 * half.total_kib
    lines += ["", f"Trend: {growth:+,.0f} MiB from 25% to 100% ({per_100k:+.1f} MiB per 100k events); 50% to 100%: "
              f"{(full.total_kib - half.total_kib) / 1024:+,.0f} MiB: "
              f"{'flat (within 5% of the RSS at 50%)' if flat else 'not flat (more than 5% of the RSS at 50%)'}. "
              f"Sampled peak {mib(total_peak)}; VmHWM worker {mib(result.peak_worker_kib)}, embedder "
              f"{mib(result.peak_embedder_kib)}."]
    lines += ["", "Window job during this run (the leader computes each closed window from the store and "
              "publishes its points; lag = `ingested_at` of the window's `requests` points - window end):", "",
              "| window | windows computed | points | events counted by `requests` | events in those windows once "
              "all were stored | lag p50 (ms) | lag max (ms) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for seconds, windows, points, requests, lag50, lagmax, events in result.windows:
        lines.append(f"| {seconds} s | {int(windows):,} | {int(points):,} | {float(requests or 0):,.0f} | {events:,} | "
                     f"{ms(float(lag50))} | {ms(float(lagmax))} |")
    lines += ["", "Windows closing after the last row was stored are not in the table; a window computed before "
              "all its events were stored counts fewer (the second pass, at the feedback horizon, would recount)."]
    lines += ["", f"Embedded for drift: {result.embedded:,} events "
              f"({result.embedded / max((result.stats.last_ms - result.stats.first_ms) / 1000, 1e-3):.1f}/s over the "
              "steady phase)."]
    if result.profile and result.profile_span:
        start, end = result.profile_span
        lines += ["", "### Where the worker's time goes (throughput run)", "",
                  f"py-spy {PROFILE_HZ} Hz, `--subprocesses --threads --nonblocking`, attached to the worker "
                  f"from {start:.0f} s to {end:.0f} s after its start, at ~{args.profile_at:.0%} progress; rate "
                  f"stored meanwhile {result.rate_between(start, end):,.0f} inference events/s (whole steady phase "
                  f"{rate:,.0f}).", "", *result.profile]
    return lines


def render_latency(results: Results) -> list[str]:
    args = results.args
    lines = [
        f"### Event-to-metric latency at {args.rate:,.0f} events/s", "",
        f"{args.rate:,.0f} inference events/s (+{args.feedback_ratio:.0%} feedback) for {args.warmup_seconds:g} s of "
        f"warm-up and {args.latency_seconds:g} s measured, `timestamp` = send time; every window lying wholly in "
        "the measured part counts. *After window end* = `ingested_at` of the window's `requests` metric points "
        "(the latest, if several models) - window end: a window's metrics cannot exist before it closes. *After "
        "last event* = the same - the timestamp of the window's last event. The worker's delay splits into "
        "window end -> computed (`metric_points.timestamp`: lateness, timer tick, reads, families) and computed "
        "-> queryable (publish to the metrics topic, consume, batch, insert). Baseline: the plain consumer "
        "stores raw rows; a SQL aggregate over them is the metric, queryable once the window's last row is "
        "stored. Percentiles are nearest-rank over windows (with few windows, p99 is the maximum).", "",
        "| consumer | window | windows | events per window | after window end p50 / p99 (ms) | after last event "
        "p50 / p99 (ms) | end -> computed p50 / p99 (ms) | computed -> queryable p50 / p99 (ms) | p99 vs baseline |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    baseline = next((run for run in results.latency if run.system == "baseline"), None)
    for run in results.latency:
        for seconds in results.window_seconds:
            windows = [w for w in run.windows if w.seconds == seconds]
            if not windows:
                continue
            after_end = [w.queryable_ms - w.end_ms for w in windows]
            after_last = [w.queryable_ms - w.last_event_ms for w in windows]
            split = "n/a | n/a"
            if run.system != "baseline":
                computed = [w.computed_ms - w.end_ms for w in windows]
                published = [w.queryable_ms - w.computed_ms for w in windows]
                split = (f"{ms(pct(computed, 50))} / {ms(pct(computed, 99))} | "
                         f"{ms(pct(published, 50))} / {ms(pct(published, 99))}")
            ratio = "1.00x"
            if run is not baseline and baseline is not None:
                base = [w.queryable_ms - w.end_ms for w in baseline.windows if w.seconds == seconds]
                ratio = f"{pct(after_end, 99) / pct(base, 99):.1f}x" if base and pct(base, 99) > 0 else "n/a"
            per_window = statistics.mean(w.events for w in windows)
            lines.append(f"| {run.system} | {seconds} s | {len(windows)} | {per_window:,.0f}"
                         f" | {ms(pct(after_end, 50))} / {ms(pct(after_end, 99))} | {ms(pct(after_last, 50))} / "
                         f"{ms(pct(after_last, 99))} | {split} | {ratio} |")
    lines.append("")
    for run in results.latency:
        complete = sum(1 for w in run.windows if w.requests == w.events)
        counted = "" if run.system == "baseline" else (
            f"; windows whose `requests` counted every stored event: {complete} of {len(run.windows)}")
        lines.append(f"- {run.system}: kept {run.produced.rate:,.0f} events/s; CPU {run.cpu}; peak RSS {run.peak_rss}"
                     f"{counted}; machine: {run.contention.text() if run.contention else 'n/a'}.")
    return lines


def render_components(data: dict[str, Any], throughput: Throughput | None) -> list[str]:
    costs = [Cost(**c) for c in data["costs"]]
    info = data["info"]
    repeat = data["repeat"]
    contention = data["contention"]
    batch = data["batch"]
    ingest = [c for c in costs if c.stage in ("ingest", "embedding")]
    lines = [
        "### Per-processor cost", "",
        f"In one process, no broker, one fresh chdb store, on the same synthetic traffic: {batch:,} inference events "
        f"for the ingest path; windows from {info.get('window_60', info.get('window_10', {})).get('events', 0):,} "
        "events spread evenly over the longest window, with their feedback and an embedded sample. Wall time, "
        f"best of {repeat} runs (inserts and embedding: one run); µs per event unless said otherwise. Machine: "
        f"{contention}.", "",
        "| processor (ingest path: event loop; embedding: own process) | events | total (ms) | µs each | note |",
        "|---|---:|---:|---:|---|",
    ]
    for c in ingest:
        lines.append(f"| {c.name} | {c.n:,} | {c.seconds * 1000:,.0f} | {c.seconds / c.n * 1e6:,.1f} | {c.note} |")
    embed = next(c for c in costs if c.note == "per embedded event")
    rate = DEFAULTS.metrics.embed_per_second
    lines += ["", f"Embedding at the default {rate:g} events/s costs {rate * embed.seconds / embed.n:.0%} of a core "
              f"in the embedder process (its model load: {info['embed_load_seconds']:.1f} s).", "",
              "Window job, per window (reads on the store thread, families on a thread of their own; both hold the "
              "GIL for most of it):", "",
              "| window step | window | events in window | ms per window | µs per event in window | note |",
              "|---|---|---:|---:|---:|---|"]
    for c in costs:
        if c.stage == "window" and c.window:
            lines.append(f"| {c.name} | {c.window} s | {c.n:,} | {c.seconds * 1000:,.1f} | "
                         f"{c.seconds / max(c.n, 1) * 1e6:,.2f} | {c.note} |")
    extra = [c for c in costs if c.stage == "window" and not c.window]
    for c in extra:
        lines.append(f"| {c.name} | - | {c.n:,} | {c.seconds * 1000:,.1f} (for {c.n}) | {c.seconds / c.n * 1e6:,.0f} "
                     f"| {c.note} |")
    lines += render_per_event(costs, throughput)
    lines += ["", per_event_summary(costs, throughput)]
    return lines


SECOND_PASS = ("read: `fetch_inference`", "read: `fetch_feedback`", "family: feedback_metrics", "family: bias_metrics")
"""What WindowJob.compute(feedback_only=True) runs again for every window at the feedback horizon."""


def fit(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """seconds = fixed + per_event x n through the smallest and the largest window (one window: no fixed part)."""
    (n1, s1), (n2, s2) = min(points), max(points)
    if n1 == n2:
        return 0.0, s2 / max(n2, 1)
    per_event = max((s2 - s1) / (n2 - n1), 0.0)
    return max(s1 - per_event * n1, 0.0), per_event


def per_event_costs(costs: Sequence[Cost], feedback_ratio: float, rate: float) -> list[tuple[str, float]]:
    """µs of CPU per ingested inference event at `rate` events/s, per processor step, largest first.

    Window steps: every event is in one window of each length, and a window of L s holds rate x L events,
    so a step costs sum over L of (fixed + per_event x rate x L) / L per second, divided by rate per event;
    steps of the second pass count twice. The embedder embeds a fixed rate whatever the event rate."""
    steps: dict[str, list[tuple[int, float, int]]] = {}
    for c in costs:
        if c.stage == "window" and c.window and ", table of" not in c.name:
            steps.setdefault(c.name, []).append((c.n, c.seconds, c.window))
    result: list[tuple[str, float]] = []
    for c in costs:
        if c.stage == "ingest":
            share = feedback_ratio if c.note == "per feedback event" else 1.0
            result.append((c.name, c.seconds / c.n * 1e6 * share))
    for name, found in steps.items():
        fixed, per_event = fit([(n, seconds) for n, seconds, _ in found])
        passes = 2 if name.startswith(SECOND_PASS) else 1
        per_second = sum(passes * (fixed + per_event * rate * length) / length for length in {w for *_, w in found})
        result.append((f"window {name}" + (" (x2: second pass)" if passes == 2 else ""), per_second / rate * 1e6))
    embed = next((c for c in costs if c.note == "per embedded event"), None)
    if embed:
        rate_embedded = DEFAULTS.metrics.embed_per_second
        result.append(("embedding (own process, fixed rate)", rate_embedded * embed.seconds / embed.n / rate * 1e6))
    return sorted(result, key=lambda kv: kv[1], reverse=True)


def worker_us(costs: Sequence[Cost], feedback_ratio: float, rate: float) -> tuple[float, float]:
    """(all, window job) µs of the worker's CPU per event at `rate`: sub-steps and the embedder left out."""
    main = [(n, v) for n, v in per_event_costs(costs, feedback_ratio, rate)
            if not n.startswith("of which") and "(own process" not in n]
    return sum(v for _, v in main), sum(v for n, v in main if n.startswith("window"))


def saturation_rate(costs: Sequence[Cost], feedback_ratio: float) -> float:
    """The rate at which these costs alone fill one core (bisection on rate x µs/event = 1 s)."""
    low, high = 1.0, 1e6
    for _ in range(60):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if mid * worker_us(costs, feedback_ratio, mid)[0] < 1e6 else (low, mid)
    return low


def per_event_summary(costs: Sequence[Cost], throughput: Throughput | None) -> str:
    ratio = (throughput.feedback / throughput.events) if throughput else 0.3
    rates = [1000.0, *([throughput.stats.steady_rate] if throughput else []), float(TARGET_RATE)]
    parts = []
    for rate in rates:
        total, window = worker_us(costs, ratio, rate)
        parts.append(f"{total:,.0f} µs at {rate:,.0f} events/s (window job {window:,.0f})")
    return ("Worker CPU per ingested inference event from these costs (decode, scoring and rows, insert, feedback, "
            "window job; Faust's own per-message work and the embedder process not included): " + ", ".join(parts)
            + f". With these alone, one core (one GIL) is full at **{saturation_rate(costs, ratio):,.0f} events/s**.")


def render_per_event(costs: Sequence[Cost], throughput: Throughput | None) -> list[str]:
    ratio = (throughput.feedback / throughput.events) if throughput else 0.3
    rates = [1000.0, float(TARGET_RATE)]
    tables = [dict(per_event_costs(costs, ratio, rate)) for rate in rates]
    order = per_event_costs(costs, ratio, float(TARGET_RATE))
    lines = ["", "Each processor's cost per ingested inference event (µs of CPU; window steps from the two window "
             "sizes above, linear in events per window; feedback at its share of events), slowest first:", "",
             "| processor | at 1,000 events/s | at 10,000 events/s |", "|---|---:|---:|"]
    for name, _ in order:
        lines.append(f"| {name} | " + " | ".join(f"{t[name]:,.1f}" for t in tables) + " |")
    return lines


def render(results: Results) -> str:
    args = results.args
    lines = [
        SECTION_TITLE, "",
        f"Run on {datetime.now(UTC):%Y-%m-%d}: {machine()}. Code: {code_state()}. Broker: embedded Tansu (memory "
        "storage) on loopback; store: chdb (in-process ClickHouse), one fresh store per process. Load average "
        f"before the run: {results.load_before[0]:.1f}/{results.load_before[1]:.1f}/{results.load_before[2]:.1f} "
        "(1/5/15 min); this machine is shared (tests, a vLLM), so each phase also says how many cores other "
        "processes kept busy.", "",
        f"    {results.command}", "",
    ]
    if results.throughput:
        lines += render_throughput(results.throughput, args) + [""]
    if results.latency:
        lines += render_latency(results) + [""]
    if results.components:
        lines += render_components(results.components, results.throughput) + [""]
    lines += render_targets(results)
    return "\n".join(lines).rstrip("\n") + "\n"


def render_targets(results: Results) -> list[str]:
    lines = ["### Targets", ""]
    t = results.throughput
    if t:
        rate = t.stats.steady_rate
        lines.append(f"- >= {TARGET_RATE:,} events/s per worker process (steady, all processors): {rate:,.0f} "
                     "events/s: " + verdict(rate >= TARGET_RATE, f"{TARGET_RATE / rate:.1f}x short "
                                            f"({TARGET_RATE - rate:,.0f} events/s)"))
        peak = max(s.total_kib for s in t.samples) / 1024
        half, full = at_progress(t.samples, t.events, 0.5), t.samples[-1]
        growth = (full.total_kib - half.total_kib) / 1024
        flat = abs(growth) <= 0.05 * half.total_kib / 1024
        lines.append(f"- RSS < 1.5 GB ({TARGET_RSS_MIB:,} MiB), worker + embedder, and flat: peak {peak:,.0f} MiB; "
                     f"{growth:+,.0f} MiB from 50% to 100% of {t.events:,} events ({'flat' if flat else 'not flat'}"
                     "): " + verdict(peak < TARGET_RSS_MIB and flat,
                                     f"peak {peak - TARGET_RSS_MIB:+,.0f} MiB over the limit"
                                     + ("" if flat else f", growth {growth:+,.0f} MiB")))
    ours = next((run for run in results.latency if run.system != "baseline"), None)
    if ours:
        for seconds in results.window_seconds:
            values = [w.queryable_ms - w.end_ms for w in ours.windows if w.seconds == seconds]
            if values:
                p99 = pct(values, 99)
                lines.append(f"- event-to-queryable metric p99 < {TARGET_P99_MS:,} ms at {results.args.rate:,.0f} "
                             f"events/s, {seconds}-s windows (after window end): {p99:,.0f} ms: "
                             + verdict(p99 < TARGET_P99_MS, f"by {p99 - TARGET_P99_MS:,.0f} ms"))
    return lines


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


# main ---------------------------------------------------------------------------------------------------

async def benchmark(args: argparse.Namespace, workdir: Path) -> Results:
    window_seconds = Settings().metrics.window_seconds
    results = Results(args, shlex.join(["python", "benchmarks/processors.py", *sys.argv[1:]]), window_seconds,
                      load_average())
    if {"throughput", "latency"} & set(args.phases):
        with EmbeddedBroker(free_port(), log_file=workdir / "broker.log") as broker:
            bootstrap = broker.bootstrap_servers
            if "throughput" in args.phases:
                results.throughput = await throughput(args, bootstrap, workdir)
            if "latency" in args.phases:
                log(f"latency: worker, {args.rate:g} events/s for {args.warmup_seconds + args.latency_seconds:g} s")
                results.latency.append(await latency_worker(args, bootstrap, workdir, window_seconds))
                log("latency: baseline")
                results.latency.append(await latency_baseline(args, bootstrap, workdir, window_seconds))
    if "components" in args.phases:
        log("per-processor cost (child process)")
        results.components = components(args, workdir, window_seconds)
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure `llmwatch worker` with all processors (scoring, sampled embedding for drift, the "
        "window job with every metric family): sustained events/s and RSS over N events, event-to-metric latency "
        "at a steady rate, and each processor's own cost, beside the plain aiokafka + clickhouse-connect "
        "baseline of benchmarks/ingest.py, on a fresh embedded broker and fresh chdb stores.",
        epilog="Targets: >= 10,000 events/s per worker process; metric p99 < 2 s after its window closes at "
        "1,000 events/s; RSS < 1.5 GB and flat. Takes about 15 minutes with the defaults on 2 cores.",
    )
    parser.add_argument("--phases", nargs="+", choices=["throughput", "latency", "components"],
                        default=["throughput", "latency", "components"], help="what to measure (default: all)")
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="inference events for the throughput and memory phase (default %(default)s)")
    parser.add_argument("--feedback-ratio", type=float, default=0.3,
                        help="feedback events per inference event (default %(default)s)")
    parser.add_argument("--timeline-rate", type=float, default=3000,
                        help="events/s of the backlog's event-time timeline; set it near the worker's rate so the "
                        "window job reads windows as large as at that rate (default %(default)s)")
    parser.add_argument("--startup-seconds", type=float, default=20,
                        help="the timeline starts this long after production is expected to end (default %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=1200,
                        help="give up the throughput phase after this long (default %(default)s)")
    parser.add_argument("--rate", type=float, default=1000, help="events/s in the latency phase (default %(default)s)")
    parser.add_argument("--warmup-seconds", type=float, default=15,
                        help="latency phase: produce this long before measuring (default %(default)s)")
    parser.add_argument("--latency-seconds", type=float, default=150,
                        help="latency phase: measured production time; >= 2 minutes gives >= 1 whole 60-s window "
                        "(default %(default)s)")
    parser.add_argument("--component-events", type=int, default=20_000,
                        help="per-processor phase: events for the ingest-path steps (default %(default)s)")
    parser.add_argument("--window-events", type=int, default=60_000,
                        help="per-processor phase: events spread over the longest window (default %(default)s; "
                        "a 10-s window then holds a sixth)")
    parser.add_argument("--embed-events", type=int, default=1200,
                        help="per-processor phase: events embedded, as the embedder would over a 60-s window at "
                        "20/s (default %(default)s)")
    parser.add_argument("--grow-table", type=int, default=1_000_000,
                        help="per-processor phase: then grow inference_events to this many rows (outside the "
                        "windows) and time the window reads again; 0: skip (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="per-processor phase: runs per step, the median is kept (default %(default)s)")
    parser.add_argument("--py-spy", metavar="EXE", help="attach this py-spy to the throughput worker (and its "
                        "embedder) for --profile-seconds in its steady phase")
    parser.add_argument("--profile-at", type=float, default=0.3,
                        help="start py-spy at this share of the events stored (default %(default)s)")
    parser.add_argument("--profile-seconds", type=float, default=30, help="py-spy duration (default %(default)s)")
    parser.add_argument("--out", type=Path, help="write the markdown section into this file (replacing an older "
                        "one); default: print it")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (stores and logs)")
    parser.add_argument("--components-worker", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--store-query", metavar="SPEC", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.components_worker:
        print(RESULT_PREFIX + json.dumps(component_costs(json.loads(args.components_worker))), flush=True)
        return
    if args.store_query:
        store_query_child(args.store_query)
        return
    workdir = Path(tempfile.mkdtemp(prefix="llmwatch-bench-processors-"))
    log(f"work directory: {workdir}")
    try:
        section = render(asyncio.run(benchmark(args, workdir)))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        write_section(args.out, section)
        log(f"wrote {args.out}")
    else:
        sys.stdout.write(section)


if __name__ == "__main__":
    main()

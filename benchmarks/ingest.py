"""Ingest benchmark: how many events/s `llmwatch worker` stores, and how soon an event is queryable.

Why it exists: llmwatch promises one worker sustains >= 10,000 inference events/s and that an event
is queryable in ClickHouse < 2 s (p99) after it is produced at 1,000 events/s. Absolute numbers
depend on the machine, so each run also measures a baseline on the same machine, the same data and
the same table (benchmarks/baseline.py: a plain aiokafka consumer with the worker's batch size, flush
time and fetch wait). Our rate is reported as a ratio of the baseline's.

One run, against a fresh embedded broker (Tansu) and fresh chdb stores; arms run one after another,
each alone on our side (the previous arm's worker and its children are ended first), and each records
the machine's contention (the CPU other processes used meanwhile), since the machine may be shared:

1. Produce N events to a topic (aiokafka, acks=all), before any consumer starts.
2. Throughput: start `llmwatch worker` on that topic (once per tuning, each with its own store, other
   topics and consumer group), wait until all N rows are queryable, and read ingest times from the table
   (`ingested_at` is set at insert): "incl. startup" runs from process start to the last row,
   "steady" from the first insert to the last. Then the baseline, in a child process.
3. Latency: a fresh worker (defaults) on a new topic; after a warm-up, produce at --rate for
   --latency-seconds with `timestamp` = send time and a marker model name, then take p50/p99 of
   dateDiff(timestamp, ingested_at) in SQL. The same for the baseline.
4. CPU per thread group of each worker and of its embedder process from /proc (the embedder is part of
   the worker's CPU per event), peak RSS (VmHWM) of both.
5. With --py-spy, one more defaults worker on the backlog with py-spy attached during its steady
   phase: where the event loop's time goes (its rate is not reported).

    python benchmarks/ingest.py --out benchmarks/RESULTS.md
    python benchmarks/ingest.py --events 2000 --latency-seconds 5 --tunings '' --quiet-wait 0   # smoke
    python benchmarks/ingest.py --tunings LLMWATCH_WORKER_PROCESSES=2   # 1 (defaults) vs 2 worker processes
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder is first on sys.path: the repository root goes first, for `benchmarks.`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import os
import random
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from benchmarks.baseline import COLUMNS, Baseline, baseline_config
from benchmarks.common import (
    CONTENTION_NOTE,
    DEFAULTS,
    Contention,
    MachineCpu,
    add_quiet_args,
    code_state,
    cpu_share,
    cpu_text,
    embedder_pid,
    free_port,
    log,
    machine,
    mib,
    verdict,
    wait_for_quiet,
    write_section,
)
from benchmarks.pyspy import PROFILE_HZ, Profiler, summarize_profile
from benchmarks.stack import (
    STATS_SQL,
    Run,
    Sender,
    TableStats,
    Worker,
    bench_topics,
)
from llmwatch.traffic import inference_event
from schemas.topics import Topics
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics

SECTION_TITLE = "## Ingest: throughput and event-to-queryable latency"
THROUGHPUT_TOPIC = "bench.throughput"
LATENCY_TOPICS = {"llmwatch": "bench.latency.llmwatch", "baseline": "bench.latency.baseline"}
DEFAULT_TUNINGS = ["", "LLMWATCH_INGEST_BATCH_SIZE=10000", "LLMWATCH_INGEST_BATCH_SIZE=20000",
                   "LLMWATCH_METRICS__EMBED_PER_SECOND=0"]
TARGET_RATE = 10_000
TARGET_P99_MS = 2_000
WARMUP_EVENTS = 1_000


@dataclass
class Results:
    args: argparse.Namespace
    command: str
    produce_rate: float = 0.0
    event_bytes: int = 0
    throughput: list[Run] = field(default_factory=list)
    latency: list[Run] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)


# producing ------------------------------------------------------------------------------------------

async def produce_backlog(bootstrap: str, topic: str, count: int, seed: int) -> float:
    """Send `count` realistic events as fast as the broker takes them; returns events/s."""
    rng = random.Random(seed)
    started = time.perf_counter()
    async with Sender(bootstrap, Topics(inference=topic), linger_ms=20) as sender:
        for _ in range(count):
            await sender.send(inference_event(rng))
    return count / (time.perf_counter() - started)


async def produce_at_rate(bootstrap: str, topic: str, rate: float, seconds: float, model: str, seed: int) -> float:
    """Send rate x seconds events, paced every 10 ms, each stamped with its send time; returns the rate kept."""
    rng = random.Random(seed)
    total = round(rate * seconds)
    sent = 0
    started = time.perf_counter()
    async with Sender(bootstrap, Topics(inference=topic), linger_ms=0) as sender:
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            for _ in range(due - sent):
                event = inference_event(rng)
                now = datetime.now(UTC)
                await sender.send(event.model_copy(update={
                    "model": model, "timestamp": now, "completed_at": now + timedelta(milliseconds=event.latency_ms),
                }))
            sent = due
            await asyncio.sleep(0.01)
    return total / (time.perf_counter() - started)


# the arms -------------------------------------------------------------------------------------------

async def worker_throughput(args: argparse.Namespace, bootstrap: str, workdir: Path, tuning: str, label: str) -> Run:
    await wait_for_quiet(args.quiet_cores, args.quiet_wait)
    machine_before = MachineCpu.now()
    worker = Worker(bootstrap, bench_topics(f"bench.{label}", inference=THROUGHPUT_TOPIC), workdir, label, tuning)
    worker.start()
    try:
        first, last = await worker.wait_rows("1", args.events, timeout=max(120.0, args.events / 200))
        contention = Contention.between(machine_before, MachineCpu.now())
        stats = TableStats.from_row(worker.sql(STATS_SQL.format(where="1")))
        run = Run("llmwatch worker", tuning or "defaults", worker.started_ms, stats, cpu_share(first, last),
                  worker.peak_rss_kib(), contention=contention)
    finally:
        worker.stop()
    return run


async def baseline_throughput(args: argparse.Namespace, bootstrap: str, workdir: Path) -> Run:
    await wait_for_quiet(args.quiet_cores, args.quiet_wait)
    machine_before = MachineCpu.now()
    baseline = Baseline(baseline_config(bootstrap, THROUGHPUT_TOPIC, workdir, "baseline", args.events, "1"),
                        workdir / "baseline.log")
    await baseline.start()
    run = await baseline.finish()
    run.contention = Contention.between(machine_before, MachineCpu.now())
    return run


async def worker_latency(args: argparse.Namespace, bootstrap: str, workdir: Path, marker: str) -> Run:
    topic = LATENCY_TOPICS["llmwatch"]
    await wait_for_quiet(args.quiet_cores, args.quiet_wait)
    worker = Worker(bootstrap, bench_topics("bench.latency-worker", inference=topic), workdir, "latency")
    where = f"model = '{marker}'"
    worker.start()
    try:
        await produce_backlog(bootstrap, topic, WARMUP_EVENTS, seed=11)
        await worker.wait_rows("1", WARMUP_EVENTS, timeout=120)
        machine_before = MachineCpu.now()
        cpu_before = worker.cpu()
        produced = await produce_at_rate(bootstrap, topic, args.rate, args.latency_seconds, marker, seed=12)
        _, cpu_after = await worker.wait_rows(where, round(args.rate * args.latency_seconds), timeout=120)
        contention = Contention.between(machine_before, MachineCpu.now())
        stats = TableStats.from_row(worker.sql(STATS_SQL.format(where=where)))
        run = Run("llmwatch worker", "defaults", worker.started_ms, stats, cpu_share(cpu_before, cpu_after),
                  worker.peak_rss_kib(), produced, contention)
    finally:
        worker.stop()
    return run


async def baseline_latency(args: argparse.Namespace, bootstrap: str, workdir: Path, marker: str) -> Run:
    topic = LATENCY_TOPICS["baseline"]
    await wait_for_quiet(args.quiet_cores, args.quiet_wait)
    config = baseline_config(bootstrap, topic, workdir, "baseline-latency",
                             WARMUP_EVENTS + round(args.rate * args.latency_seconds), f"model = '{marker}'")
    baseline = Baseline(config, workdir / "baseline-latency.log")
    await baseline.start()
    await produce_backlog(bootstrap, topic, WARMUP_EVENTS, seed=11)
    await baseline.wait_for(lambda m: m.get("inserted", 0) >= WARMUP_EVENTS, timeout=120)
    machine_before = MachineCpu.now()
    produced = await produce_at_rate(bootstrap, topic, args.rate, args.latency_seconds, marker, seed=12)
    run = await baseline.finish(produced)
    run.contention = Contention.between(machine_before, MachineCpu.now())
    return run


async def worker_profile(bootstrap: str, workdir: Path, events: int, py_spy: str) -> list[str]:
    """A defaults worker on the backlog with py-spy attached from its first row to its last."""
    worker = Worker(bootstrap, bench_topics("bench.profiled", inference=THROUGHPUT_TOPIC), workdir, "profiled")
    worker.start()
    try:
        await worker.wait_rows("1", 1, timeout=120)
        spy = Profiler(py_spy, worker.pid, workdir / "py-spy.txt")
        started = time.monotonic()
        await worker.wait_rows("1", events, timeout=max(120.0, events / 200))
        seconds = time.monotonic() - started
        spy.finish()
        embedder = embedder_pid(worker.pid)
    finally:
        worker.stop()
    return summarize_profile(spy.output, seconds, worker.pid, embedder)


# report ---------------------------------------------------------------------------------------------

def contention_cell(run: Run) -> str:
    return run.contention.cell() if run.contention else "n/a"


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
        "phase (polls every 0.5 s), per thread group and for the worker's embedder process, from /proc; the total "
        f"includes the embedder. This machine has {os.cpu_count()} cores. Peak RSS is VmHWM (worker "
        "+ embedder). Arms run one after another; before each, the benchmark waits up to "
        f"{args.quiet_wait:g} s for other processes to use less than {args.quiet_cores:g} of a core. "
        + CONTENTION_NOTE, "",
        "### Throughput", "",
        "| consumer | config | incl. startup (events/s) | steady (events/s) | steady vs baseline | CPU, steady | "
        "CPU per event | peak RSS | others (cores) |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for run in results.throughput:
        lines.append(f"| {run.system} | {run.config} | {run.startup_rate:,.0f} | {run.stats.steady_rate:,.0f} | "
                     f"{run.stats.steady_rate / baseline.stats.steady_rate:.2f}x | {cpu_text(run.cpu)} | "
                     f"{run.cpu_per_event_us:,.0f} µs | {mib(run.peak_rss_kib)} | {contention_cell(run)} |")
    lines += [
        "",
        f"Baseline: one aiokafka consumer (group, earliest) doing json.loads, two timestamp parses and a "
        f"clickhouse-connect insert of the same {len(COLUMNS)} columns into the same table, in batches of "
        f"{DEFAULTS.ingest_batch_size} or {DEFAULTS.ingest_flush_seconds:g} s, fetch wait "
        f"{DEFAULTS.kafka_fetch_max_wait_ms} ms (the worker's), committing after each insert. No pydantic "
        "validation, no dead-lettering, no scoring, no Faust.", "",
        f"Best tuning: **{best.config}** ({best.stats.steady_rate:,.0f} events/s steady, "
        f"{best.stats.steady_rate / default.stats.steady_rate:.2f}x the defaults).", "",
        "### Event-to-queryable latency", "",
        f"After {WARMUP_EVENTS:,} warm-up events, {args.rate:g} events/s for {args.latency_seconds:g} s, each "
        "stamped `timestamp` = send time; latency = `dateDiff('millisecond', timestamp, ingested_at)` in SQL "
        "over those events (`ingested_at` is taken as the insert runs, so the part's commit, a few ms, is "
        f"not included). Both consumers fetch with a {DEFAULTS.kafka_fetch_max_wait_ms} ms wait.", "",
        "| consumer | config | events | rate kept (events/s) | p50 (ms) | p99 (ms) | max (ms) | CPU | peak RSS | "
        "others (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for run in results.latency:
        lines.append(f"| {run.system} | {run.config} | {run.stats.rows:,} | {run.produced_rate:,.0f} | "
                     f"{run.stats.p50_ms:,.0f} | {run.stats.p99_ms:,.0f} | {run.stats.max_ms:,.0f} | "
                     f"{cpu_text(run.cpu)} | {mib(run.peak_rss_kib)} | {contention_cell(run)} |")
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
        f"CPU per stored event (defaults, steady, embedder included): {default.cpu_per_event_us:,.0f} µs for the "
        f"worker, {baseline.cpu_per_event_us:,.0f} µs for the baseline; the event-loop thread alone "
        f"{default.cpu['event loop'] * 10_000 / default.stats.steady_rate:,.0f} µs, the embedder process "
        f"{default.cpu.get('embedder process', 0.0) * 10_000 / default.stats.steady_rate:,.0f} µs.",
    ]
    if results.profile:
        lines += ["", "### Where the worker's time goes", "",
                  f"A further defaults worker on the same backlog, py-spy ({PROFILE_HZ} Hz, `--subprocesses "
                  "--threads`) attached from its first row to its last; its rate is slowed by the sampling and not "
                  "reported.", "", *results.profile]
    return "\n".join(lines) + "\n"


# main -----------------------------------------------------------------------------------------------

async def benchmark(args: argparse.Namespace, workdir: Path) -> Results:
    results = Results(args, shlex.join(["python", "benchmarks/ingest.py", *sys.argv[1:]]))
    marker = f"bench-latency-{uuid.uuid4().hex[:8]}"
    with EmbeddedBroker(free_port(), log_file=workdir / "broker.log") as broker:
        bootstrap = broker.bootstrap_servers
        for topic in (THROUGHPUT_TOPIC, *LATENCY_TOPICS.values()):
            ensure_topics(bootstrap, Topics(inference=topic))
        log(f"producing {args.events:,} events to {THROUGHPUT_TOPIC} on {bootstrap}")
        results.produce_rate = await produce_backlog(bootstrap, THROUGHPUT_TOPIC, args.events, seed=7)
        results.event_bytes = len(inference_event(random.Random(7)).model_dump_json())
        log(f"  {results.produce_rate:,.0f} events/s")
        for n, tuning in enumerate(args.tunings):
            log(f"throughput: llmwatch worker, {tuning or 'defaults'}")
            results.throughput.append(await worker_throughput(args, bootstrap, workdir, tuning, f"worker{n}"))
            log(f"  steady {results.throughput[-1].stats.steady_rate:,.0f} events/s")
        log("throughput: baseline")
        results.throughput.append(await baseline_throughput(args, bootstrap, workdir))
        log(f"  steady {results.throughput[-1].stats.steady_rate:,.0f} events/s")
        log(f"latency: llmwatch worker, {args.rate:g} events/s for {args.latency_seconds:g} s")
        results.latency.append(await worker_latency(args, bootstrap, workdir, marker))
        log(f"  p99 {results.latency[-1].stats.p99_ms:,.0f} ms")
        log("latency: baseline")
        results.latency.append(await baseline_latency(args, bootstrap, workdir, marker))
        log(f"  p99 {results.latency[-1].stats.p99_ms:,.0f} ms")
        if args.py_spy:
            log("profile: llmwatch worker, defaults, py-spy attached from the first row to the last")
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
    add_quiet_args(parser)
    parser.add_argument("--out", type=Path, help="write the markdown section into this file (replacing an older "
                        "one); default: print it")
    parser.add_argument("--py-spy", metavar="EXE", help="also profile one more defaults worker with this py-spy "
                        "(attached during its steady phase; not used for the rates)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (stores and logs)")
    args = parser.parse_args(argv)
    args.tunings = ["", *(t for t in args.tunings if t)]
    return args


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="llmwatch-bench-"))
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

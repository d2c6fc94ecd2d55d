"""Processors benchmark, phase 1: throughput and memory of a worker running every processor, beside the baseline.

Why it exists: the worker must sustain >= 10,000 inference events/s with all its processors (validation,
scoring, sampled embedding, the window job) and stay under 1.5 GB, flat, over a million events. How: N
inference events plus feedback for ~30% of them are produced before any consumer starts, with event
timestamps on a timeline at --timeline-rate events/s that begins about when the worker will start, so that
the window job reads full windows while the backlog is ingested (as it would at that rate live). The worker
(defaults) is sampled every second: RSS of it and its embedder, progress (/llmwatch/health), and CPU of
both. Then, with the worker and its children gone, the baseline on the same topic. Each arm waits for a
quiet machine first and records the contention during it. With --py-spy a further worker, not measured,
is profiled for a while at the same progress. Run by

    python benchmarks/processors.py --phases throughput --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.baseline import Baseline, baseline_config
from benchmarks.common import (
    CONTENTION_NOTE,
    DEFAULTS,
    Contention,
    CpuSample,
    MachineCpu,
    cpu_share,
    cpu_text,
    descendants,
    embedder_pid,
    log,
    mib,
    ms,
    peak_rss_kib,
    vm_rss_kib,
    wait_for_quiet,
)
from benchmarks.pyspy import PROFILE_HZ, Profiler, summarize_profile
from benchmarks.stack import (
    STATS_SQL,
    Produced,
    Run,
    TableStats,
    Worker,
    bench_topics,
    produce_timeline,
)
from schemas.topics import Topics
from streams.kafka.topics import ensure_topics


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
    cpu: dict[str, float]  # the worker's thread groups and its embedder process
    peak_worker_kib: int
    peak_embedder_kib: int
    embedded: int
    windows: list[list[Any]]  # window_seconds, windows, points, requests sum, lag p50/max ms, events in them
    contention: Contention
    processes: int = 1
    others: list[Throughput] = field(default_factory=list)  # further arms, with other process counts
    baseline: Run | None = None
    profile: list[str] = field(default_factory=list)
    profile_rate: float = math.nan  # inference events/s the profiled worker stored while sampled

    @property
    def all_events_rate(self) -> float:
        """Inference and feedback rows over the time from the first insert of either to the last."""
        first = min(self.stats.first_ms, self.feedback_first_ms or self.stats.first_ms)
        last = max(self.stats.last_ms, self.feedback_last_ms)
        return (self.events + self.feedback) / max((last - first) / 1000, 1e-3)

    @property
    def cpu_per_event_us(self) -> float:
        """Worker and embedder CPU per stored inference event (feedback's cost included), steady phase."""
        return self.cpu["total"] * 10_000 / self.stats.steady_rate


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


def stored(report: dict[str, Any], table: str) -> int:
    return int(report.get("ingest", {}).get(table, {}).get("stored", 0))


async def production_seconds(bootstrap: str, count: int, feedback_ratio: float, sample: int = 20_000) -> float:
    """About how long producing `count` events (and their feedback) will take: a sample is produced the same
    way to topics nobody reads."""
    scratch = bench_topics("bench.calibration")
    ensure_topics(bootstrap, scratch)
    sample = min(sample, count)
    produced = await produce_timeline(bootstrap, scratch, sample, feedback_ratio, datetime.now(UTC), 1000.0, seed=1)
    return (produced.ended - produced.started) / sample * count


async def throughput(args: argparse.Namespace, bootstrap: str, workdir: Path) -> Throughput:
    topics = bench_topics("bench.proc")
    ensure_topics(bootstrap, topics)
    estimate = await production_seconds(bootstrap, args.events, args.feedback_ratio)
    timeline_start = datetime.now(UTC) + timedelta(seconds=estimate + args.startup_seconds)
    log(f"producing {args.events:,} events (+~{args.feedback_ratio:.0%} feedback), timestamps from "
        f"{timeline_start:%H:%M:%S} at {args.timeline_rate:,.0f}/s (estimated {estimate:.0f} s to produce)")
    produced = await produce_timeline(bootstrap, topics, args.events, args.feedback_ratio, timeline_start,
                                      args.timeline_rate, seed=7)
    log(f"  {produced.inference:,} + {produced.feedback:,} feedback in {produced.ended - produced.started:.0f} s")
    first, *more = args.worker_processes
    result = await worker_arm(args, bootstrap, workdir, topics, produced, timeline_start, first)
    log(f"  steady {result.stats.steady_rate:,.0f} inference events/s")
    for processes in more:  # the same backlog, read again by a consumer group of its own
        result.others.append(await worker_arm(args, bootstrap, workdir, topics, produced, timeline_start, processes))
        log(f"  steady {result.others[-1].stats.steady_rate:,.0f} inference events/s")
    log("throughput: baseline")
    await wait_for_quiet(args.quiet_cores, args.quiet_wait)
    machine_before = MachineCpu.now()
    baseline = Baseline(baseline_config(bootstrap, topics.inference, workdir, "baseline", args.events, "1"),
                        workdir / "baseline.log")
    await baseline.start()
    result.baseline = await baseline.finish()
    result.baseline.contention = Contention.between(machine_before, MachineCpu.now())
    log(f"  steady {result.baseline.stats.steady_rate:,.0f} events/s")
    if args.py_spy:
        result.profile, result.profile_rate = await profile(args, bootstrap, workdir, topics)
    return result


async def worker_arm(args: argparse.Namespace, bootstrap: str, workdir: Path, topics: Topics, produced: Produced,
                     timeline_start: datetime, processes: int = 1) -> Throughput:
    await wait_for_quiet(args.quiet_cores, args.quiet_wait)
    machine_before = MachineCpu.now()
    worker = Worker(bootstrap, topics, workdir, "throughput" if processes == 1 else f"throughput-{processes}p",
                    f"LLMWATCH_WORKER_PROCESSES={processes}")
    worker.start()
    log(f"throughput: worker pid {worker.pid} ({processes} processes) started in "
        f"{time.time() - worker.started_ms / 1000:.1f} s")
    samples: list[Sample] = []
    first: CpuSample | None = None
    embedder: int | None = None
    deadline = time.monotonic() + args.max_seconds
    try:
        while True:
            tick = time.monotonic()
            reports = await asyncio.to_thread(worker.healths)
            embedder = embedder or embedder_pid(worker.pid)
            others = [p for p in descendants(worker.pid) if p != embedder]
            at = time.time() - worker.started_ms / 1000
            sample = Sample(at, sum(stored(r, "inference_events") for r in reports),
                            sum(stored(r, "feedback_events") for r in reports),
                            vm_rss_kib(worker.pid), vm_rss_kib(embedder) if embedder else 0,
                            sum(vm_rss_kib(p) for p in others))
            samples.append(sample)
            cpu_now = worker.cpu()
            if sample.inference and first is None:
                first = cpu_now
            if len(samples) % 15 == 0:
                log(f"  {at:5.0f} s: {sample.inference:,} inference, {sample.feedback:,} feedback stored, "
                    f"RSS {mib(sample.worker_kib)} + embedder {mib(sample.embedder_kib)}")
            if sample.inference >= args.events and sample.feedback >= produced.feedback:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sample.inference:,} of {args.events:,} events stored after "
                                   f"{args.max_seconds:g} s; see {worker.log}")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        assert first is not None
        contention = Contention.between(machine_before, MachineCpu.now())
        stats = TableStats.from_row(worker.sql(STATS_SQL.format(where="1")))
        feedback_first, feedback_last = worker.sql(
            "SELECT toUnixTimestamp64Milli(min(ingested_at)), toUnixTimestamp64Milli(max(ingested_at)) "
            "FROM feedback_events")
        embedded = int(worker.sql("SELECT uniqExact(event_id) FROM embeddings")[0])
        windows = worker.query(WINDOW_LAG_SQL)
        for row in windows:  # and how many events those windows hold now that all are stored
            row.append(int(worker.sql(WINDOW_EVENTS_SQL.format(seconds=int(row[0])))[0]))
        return Throughput(
            args.events, produced.feedback, produced, args.timeline_rate, timeline_start.timestamp(),
            worker.started_ms, stats, int(feedback_first), int(feedback_last), samples, cpu_share(first, cpu_now),
            peak_rss_kib(worker.pid), peak_rss_kib(embedder) if embedder else 0, embedded, windows, contention,
            processes)
    finally:
        worker.stop()


async def profile(args: argparse.Namespace, bootstrap: str, workdir: Path, topics: Topics) -> tuple[list[str], float]:
    """A further worker on the same backlog (its own group, store and metrics topic), py-spy attached for
    --profile-seconds once it has stored --profile-at of the events; not a measured arm."""
    log(f"profile: a further worker, py-spy for {args.profile_seconds:g} s at {args.profile_at:.0%} progress")
    worker = Worker(bootstrap, bench_topics("bench.proc-profile", inference=topics.inference,
                                            feedback=topics.feedback), workdir, "profiled")
    worker.start()
    try:
        while (before := stored(await asyncio.to_thread(worker.health), "inference_events")) < \
                args.profile_at * args.events:
            await asyncio.sleep(1)
        started = time.monotonic()
        spy = Profiler(args.py_spy, worker.pid, workdir / "py-spy.txt", args.profile_seconds)
        await asyncio.to_thread(spy.finish)
        rate = (stored(await asyncio.to_thread(worker.health), "inference_events") - before) / \
            (time.monotonic() - started)
        lines = summarize_profile(spy.output, args.profile_seconds, worker.pid, embedder_pid(worker.pid)) \
            if spy.output.exists() else []
    finally:
        worker.stop()
    return lines, rate


def at_progress(samples: list[Sample], events: int, share: float) -> Sample:
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
        "process; its CPU counts both. *Steady* is inference rows after the first insert over the time from the "
        "first insert to the last (`ingested_at`), as in the ingest section. The arms ran one after the other, "
        "the worker and its children ended before the baseline started. A row with more processes is "
        "`llmwatch worker --processes N` on the same backlog, read again by a consumer group of its own (the "
        "first process owns the store and the others write through it; one embedder); its CPU and RSS count "
        "every process. " + CONTENTION_NOTE, "",
        "| consumer | inference events | incl. startup (events/s) | steady (events/s) | steady vs baseline | "
        "all events incl. feedback (events/s) | CPU, steady | CPU per inference event | peak RSS | others (cores) |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
        *(f"| llmwatch worker, {arm.processes} process{'es' if arm.processes > 1 else ''} | {arm.events:,} | "
          f"{arm.stats.rate_since(arm.started_ms):,.0f} | {arm.stats.steady_rate:,.0f} | "
          f"{arm.stats.steady_rate / baseline.stats.steady_rate:.2f}x | {arm.all_events_rate:,.0f} | "
          f"{cpu_text(arm.cpu)} | {arm.cpu_per_event_us:,.0f} µs | {mib(max(s.total_kib for s in arm.samples))} "
          f"(worker + embedder{' + the other processes' if arm.processes > 1 else ''}, sampled) | "
          f"{arm.contention.cell()} |" for arm in [result, *result.others]),
        f"| baseline | {baseline.stats.rows:,} | {baseline.startup_rate:,.0f} | {baseline.stats.steady_rate:,.0f} | "
        f"1.00x | n/a (inference only) | {cpu_text(baseline.cpu)} | {baseline.cpu_per_event_us:,.0f} µs | "
        f"{mib(baseline.peak_rss_kib)} | {baseline.contention.cell() if baseline.contention else 'n/a'} |",
        "",
        f"Machine during the worker: {result.contention.text()}. During the baseline: "
        f"{baseline.contention.text() if baseline.contention else 'n/a'}.", "",
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
    if result.profile:
        lines += ["", "### Where the worker's time goes (a further worker on the same backlog)", "",
                  f"py-spy {PROFILE_HZ} Hz, `--subprocesses --threads --nonblocking`, attached for "
                  f"{args.profile_seconds:g} s to a worker that is not one of the measured arms, once it had stored "
                  f"{args.profile_at:.0%} of the events; it stored {result.profile_rate:,.0f} inference events/s "
                  f"meanwhile (slowed by the sampling; the measured arm: {rate:,.0f}).", "", *result.profile]
    return lines

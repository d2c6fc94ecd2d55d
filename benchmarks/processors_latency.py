"""Processors benchmark, phase 2: event-to-metric latency at a steady rate, worker and baseline.

Why it exists: a window's metrics must be queryable < 2 s (p99) after the window closes at 1,000 events/s.
How: a fresh worker; --rate events/s (plus feedback) with `timestamp` = send time, for --warmup-seconds +
--latency-seconds. Every window lying wholly in the measured part is expected to get a `requests` metric
point; its latency is `ingested_at` of those points - window end (the metric cannot exist earlier). A
window whose metric is not queryable within --metric-deadline-seconds of its end is a miss: it is counted,
never dropped, and the p99 is given with misses counted as the deadline (a lower bound) and as infinite.
The baseline stores raw rows only; its "metric" is a SQL aggregate over them, queryable once the window's
last row is, judged by the same deadline. The arms run one after the other (the worker and its children
end before the baseline starts), consume with the same fetch wait, and each records the contention. Run by

    python benchmarks/processors.py --phases latency --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.baseline import Baseline, baseline_config, store_queries
from benchmarks.common import (
    DEFAULTS,
    Contention,
    MachineCpu,
    cpu_share,
    cpu_text,
    log,
    mib,
    ms,
    pct,
    wait_for_quiet,
)
from benchmarks.stack import (
    Produced,
    Worker,
    bench_topics,
    produce_paced,
)
from streams.kafka.topics import ensure_topics


@dataclass(frozen=True)
class WindowLatency:
    seconds: int
    start_ms: int
    events: int
    requests: float  # what the requests metric counted (nan for the baseline)
    last_event_ms: int
    computed_ms: int | None  # MetricPoint.timestamp (None for the baseline, or no metric)
    queryable_ms: int | None  # None: no metric (no row, for the baseline) when the arm stopped waiting

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.seconds * 1000

    def missed(self, deadline_ms: float) -> bool:
        return self.queryable_ms is None or self.queryable_ms - self.end_ms > deadline_ms


@dataclass
class Latency:
    system: str
    produced: Produced
    measured_from: float
    deadline_ms: float
    windows: list[WindowLatency]  # every expected window, missed ones included
    cpu: str = ""
    peak_rss: str = ""
    contention: Contention | None = None

    def of(self, seconds: int) -> tuple[list[WindowLatency], int]:
        """Windows of this length that made the deadline, and how many did not."""
        windows = [w for w in self.windows if w.seconds == seconds]
        made = [w for w in windows if not w.missed(self.deadline_ms)]
        return made, len(windows) - len(made)

    def p99(self, seconds: int, miss_as: float) -> float:
        """p99 after window end over every expected window, a miss counted as `miss_as`."""
        made, misses = self.of(seconds)
        values = [float(w.queryable_ms - w.end_ms) for w in made if w.queryable_ms is not None]
        return pct(values + [miss_as] * misses, 99)


def window_starts(first: float, last: float, seconds: int) -> list[int]:
    """Start (epoch ms) of every window of `seconds` lying wholly within [first, last] (epoch seconds)."""
    start = math.ceil(first / seconds) * seconds
    return [s * 1000 for s in range(start, int(last) - seconds + 1, seconds)]


def events_sql(seconds: int, first_ms: int, last_ms: int) -> str:
    ms_ = seconds * 1000
    return (f"SELECT intDiv(toUnixTimestamp64Milli(timestamp), {ms_}) * {ms_} AS w, count(), "
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
    topics = bench_topics("bench.latency")
    ensure_topics(bootstrap, topics)
    await wait_for_quiet(args.quiet_cores, args.quiet_wait)
    worker = Worker(bootstrap, topics, workdir, "latency")
    worker.start()
    deadline_ms = args.metric_deadline_seconds * 1000
    try:
        machine_before = MachineCpu.now()
        cpu_before = worker.cpu()
        produced = await produce_paced(bootstrap, topics, args.rate, args.warmup_seconds + args.latency_seconds,
                                       args.feedback_ratio, seed=12)
        measured_from = produced.started + args.warmup_seconds
        expected = {(s, start) for s in window_seconds for start in window_starts(measured_from, produced.ended, s)}
        first_ms, last_ms = int(measured_from * 1000) - 1, int(produced.ended * 1000) + 1
        # Wait until every expected window has its metric, or the last one's deadline has passed.
        give_up = max((start + s * 1000 for s, start in expected), default=0) / 1000 + args.metric_deadline_seconds
        while True:
            points = {(int(s), int(start)): row for s, start, *row in worker.query(points_sql(first_ms, last_ms))}
            if expected <= points.keys() or time.time() > give_up:
                break
            await asyncio.sleep(1)
        cpu = cpu_text(cpu_share(cpu_before, worker.cpu()))
        contention = Contention.between(machine_before, MachineCpu.now())
        peak = worker.peak_rss_kib()
        events = {(s, int(start)): (int(count), int(last_event)) for s in window_seconds
                  for start, count, last_event, _ in worker.query(events_sql(s, first_ms, last_ms))}
        windows = []
        for s, start in sorted(expected):
            count, last_event = events.get((s, start), (0, start))
            requests, computed, queryable = points.get((s, start), (math.nan, None, None))
            windows.append(WindowLatency(s, start, count, float(requests), last_event,
                                         None if computed is None else int(computed),
                                         None if queryable is None else int(queryable)))
    finally:
        worker.stop()
    missing = sum(w.missed(deadline_ms) for w in windows)
    if missing:
        log(f"  {missing} of {len(windows)} measured windows had no requests metric by their deadline")
    return Latency("llmwatch worker", produced, measured_from, deadline_ms, windows, cpu,
                   f"{mib(peak)} (worker + embedder)", contention)


async def latency_baseline(args: argparse.Namespace, bootstrap: str, workdir: Path,
                           window_seconds: Sequence[int]) -> Latency:
    topics = bench_topics("bench.latency-baseline")
    ensure_topics(bootstrap, topics)
    total = round(args.rate * (args.warmup_seconds + args.latency_seconds))
    config = baseline_config(bootstrap, topics.inference, workdir, "baseline-latency", total, "1")
    baseline = Baseline(config, workdir / "baseline-latency.log")
    await wait_for_quiet(args.quiet_cores, args.quiet_wait)
    machine_before = MachineCpu.now()
    await baseline.start()
    produced = await produce_paced(bootstrap, topics, args.rate, args.warmup_seconds + args.latency_seconds,
                                   args.feedback_ratio, seed=12)
    run = await baseline.finish(produced.rate)
    contention = Contention.between(machine_before, MachineCpu.now())
    measured_from = produced.started + args.warmup_seconds
    first_ms, last_ms = int(measured_from * 1000) - 1, int(produced.ended * 1000) + 1
    results = store_queries(Path(config.store_dir), [events_sql(s, first_ms, last_ms) for s in window_seconds],
                            workdir / "store-query.log")
    windows = []
    for s, rows in zip(window_seconds, results, strict=True):
        found = {int(start): (int(count), int(last_event), int(last_ingested))
                 for start, count, last_event, last_ingested in rows}
        for start in window_starts(measured_from, produced.ended, s):
            count, last_event, last_ingested = found.get(start, (0, start, None))  # type: ignore[arg-type]
            windows.append(WindowLatency(s, start, count, math.nan, last_event, None, last_ingested))
    return Latency("baseline", produced, measured_from, args.metric_deadline_seconds * 1000, windows,
                   cpu_text({"total": run.cpu["total"]}), mib(run.peak_rss_kib), contention)


def render_latency(runs: list[Latency], args: argparse.Namespace, window_seconds: Sequence[int]) -> list[str]:
    deadline = args.metric_deadline_seconds
    lines = [
        f"### Event-to-metric latency at {args.rate:,.0f} events/s", "",
        f"{args.rate:,.0f} inference events/s (+{args.feedback_ratio:.0%} feedback) for {args.warmup_seconds:g} s of "
        f"warm-up and {args.latency_seconds:g} s measured, `timestamp` = send time; every window lying wholly in "
        "the measured part counts. *After window end* = `ingested_at` of the window's `requests` metric points "
        "(the latest, if several models) - window end: a window's metrics cannot exist before it closes. A window "
        f"whose metric was not queryable {deadline:g} s after its end is a **miss**; misses are counted, not "
        f"dropped: p99 is shown over the windows that made it, with each miss counted as {deadline:g} s (a lower "
        "bound), and with each miss counted as infinite (the honest one; the target is judged on it). *After last "
        "event* = the same - the timestamp of the window's last event. The worker's delay splits into window end "
        "-> computed (`metric_points.timestamp`: lateness, timer tick, reads, families) and computed -> queryable "
        "(publish to the metrics topic, consume, batch, insert). Baseline: the plain consumer stores raw rows; a "
        "SQL aggregate over them is the metric, queryable once the window's last row is stored. Both consume with "
        f"a {DEFAULTS.kafka_fetch_max_wait_ms} ms fetch wait. Percentiles are nearest-rank over windows (with few "
        "windows, p99 is the maximum).", "",
        "| consumer | window | windows expected | **missed** | events per window | after window end p50 / p99 (ms), "
        f"made it | p99, miss = {deadline:g} s | **p99, miss = ∞** | after last event p50 / p99 (ms) | end -> "
        "computed p50 / p99 (ms) | computed -> queryable p50 / p99 (ms) | p99 vs baseline (miss = ∞) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    baseline = next((run for run in runs if run.system == "baseline"), None)
    for run in runs:
        for seconds in window_seconds:
            made, misses = run.of(seconds)
            if not made and not misses:
                continue
            after_end = [float(w.queryable_ms - w.end_ms) for w in made if w.queryable_ms is not None]
            after_last = [float(w.queryable_ms - w.last_event_ms) for w in made if w.queryable_ms is not None]
            split = "n/a | n/a"
            if run.system != "baseline":
                computed = [float(w.computed_ms - w.end_ms) for w in made if w.computed_ms is not None]
                published = [float(w.queryable_ms - w.computed_ms) for w in made
                             if w.computed_ms is not None and w.queryable_ms is not None]
                split = (f"{ms(pct(computed, 50))} / {ms(pct(computed, 99))} | "
                         f"{ms(pct(published, 50))} / {ms(pct(published, 99))}")
            p99_inf = run.p99(seconds, math.inf)
            ratio = "1.00x"
            if run is not baseline and baseline is not None:
                base = baseline.p99(seconds, math.inf)
                ratio = ("n/a" if not base or math.isnan(base) or math.isinf(base)
                         else "∞" if math.isinf(p99_inf) else f"{p99_inf / base:.1f}x")
            per_window = statistics.mean(w.events for w in made) if made else math.nan
            lines.append(f"| {run.system} | {seconds} s | {len(made) + misses} | {misses} | {ms(per_window)}"
                         f" | {ms(pct(after_end, 50))} / {ms(pct(after_end, 99))} | "
                         f"{ms(run.p99(seconds, deadline * 1000))} | **{ms(p99_inf)}** | "
                         f"{ms(pct(after_last, 50))} / {ms(pct(after_last, 99))} | {split} | {ratio} |")
    lines.append("")
    for run in runs:
        complete = sum(1 for w in run.windows if w.queryable_ms is not None and w.requests == w.events)
        counted = "" if run.system == "baseline" else (
            f"; windows whose `requests` counted every stored event: {complete} of {len(run.windows)}")
        lines.append(f"- {run.system}: kept {run.produced.rate:,.0f} events/s; CPU {run.cpu}; peak RSS {run.peak_rss}"
                     f"{counted}; machine: {run.contention.text() if run.contention else 'n/a'}.")
    return lines

"""Processors benchmark: all processors of `llmwatch worker` at once, event-to-metric latency, memory, and the
cost of each processor on its own.

Why it exists: llmwatch promises that one worker process sustains >= 10,000 inference events/s through all
its processors together (validation, per-event scoring, sampled embedding for drift, the window job with
every metric family) into ClickHouse; that a window's metrics are queryable < 2 s (p99) after the window
closes at 1,000 events/s; and that its memory stays under 1.5 GB and flat over a million events. Absolute
numbers depend on the machine, so every phase runs a baseline beside it in the same run (the plain aiokafka
+ clickhouse-connect consumer of benchmarks/baseline.py, with the worker's batch size, flush time and fetch
wait) and reports ratios; and each processor is timed alone so that the slowest one is visible.

Arms run one after the other, each alone on our side (the previous worker and its children are ended
first); before each the benchmark waits for other processes to go quiet (--quiet-cores, --quiet-wait) and
during each it records the contention (CPU used by processes outside the benchmark, and the load average).
This file runs the phases and writes the section; each phase lives in a module of its own:

1. benchmarks/processors_throughput.py: throughput and memory over N events (and, with --py-spy, a profile
   of a further, unmeasured worker).
2. benchmarks/processors_latency.py: event-to-metric latency at --rate; a window without its metric by
   --metric-deadline-seconds is a miss, counted in the p99.
3. benchmarks/processors_components.py: per-processor cost, in a child process.

    python benchmarks/processors.py --out benchmarks/RESULTS.md
    python benchmarks/processors.py --py-spy /tmp/pyspy/bin/py-spy --out benchmarks/RESULTS.md
    python benchmarks/processors.py --events 5000 --latency-seconds 20 --warmup-seconds 2 \\
        --component-events 2000 --window-events 3000 --embed-events 64 --grow-table 0 --repeat 1 \\
        --quiet-wait 0                                                                       # smoke
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder is first on sys.path, and this file's name would hide the project's
# `processors` package: the repository root goes first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import math
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from benchmarks.common import (
    add_quiet_args,
    code_state,
    free_port,
    load_average,
    log,
    machine,
    ms,
    verdict,
    write_section,
)
from benchmarks.processors_components import components, render_components
from benchmarks.processors_latency import Latency, latency_baseline, latency_worker, render_latency
from benchmarks.processors_throughput import Throughput, at_progress, render_throughput, throughput
from streams.kafka.broker import EmbeddedBroker
from streams.settings import Settings

SECTION_TITLE = "## Processors: all processors together, event-to-metric latency, memory, per-processor cost"
TARGET_RATE = 10_000
TARGET_P99_MS = 2_000
TARGET_RSS_MIB = 1536  # 1.5 GiB


@dataclass
class Results:
    args: argparse.Namespace
    command: str
    window_seconds: tuple[int, ...]
    load_before: tuple[float, float, float]
    throughput: Throughput | None = None
    latency: list[Latency] = field(default_factory=list)
    components: dict[str, Any] | None = None


def render(results: Results) -> str:
    args = results.args
    lines = [
        SECTION_TITLE, "",
        f"Run on {datetime.now(UTC):%Y-%m-%d}: {machine()}. Code: {code_state()}. Broker: embedded Tansu (memory "
        "storage) on loopback; store: chdb (in-process ClickHouse), one fresh store per process. Load average "
        f"before the run: {results.load_before[0]:.1f}/{results.load_before[1]:.1f}/{results.load_before[2]:.1f} "
        "(1/5/15 min). Arms ran one after the other; before each, the benchmark waited up to "
        f"{args.quiet_wait:g} s for other processes to use less than {args.quiet_cores:g} of a core, and each arm "
        "says how many cores other processes kept busy during it.", "",
        f"    {results.command}", "",
    ]
    if results.throughput:
        lines += render_throughput(results.throughput, args) + [""]
    if results.latency:
        lines += render_latency(results.latency, args, results.window_seconds) + [""]
    if results.components:
        t = results.throughput
        lines += render_components(results.components, t.feedback / t.events if t else args.feedback_ratio,
                                   t.stats.steady_rate if t else None) + [""]
    lines += render_targets(results)
    return "\n".join(lines).rstrip("\n") + "\n"


def render_targets(results: Results) -> list[str]:
    lines = ["### Targets", ""]
    t = results.throughput
    if t:
        rate = t.stats.steady_rate
        lines.append(f"- >= {TARGET_RATE:,} events/s per worker process (steady, all processors): {rate:,.0f} "
                     "events/s: " + verdict(rate >= TARGET_RATE, f"{TARGET_RATE / rate:.1f}x short "
                                            f"({TARGET_RATE - rate:,.0f} events/s)")
                     + (" (arm **contended**: not comparable)" if t.contention.contended else ""))
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
            made, misses = ours.of(seconds)
            if not made and not misses:
                continue
            p99 = ours.p99(seconds, math.inf)
            lines.append(f"- event-to-queryable metric p99 < {TARGET_P99_MS:,} ms at {results.args.rate:,.0f} "
                         f"events/s, {seconds}-s windows (after window end, a missed window counted as ∞): "
                         f"{ms(p99)} ms, {misses} of {len(made) + misses} windows missed: "
                         + verdict(p99 < TARGET_P99_MS, "no metric by the deadline" if math.isinf(p99)
                                   else f"by {p99 - TARGET_P99_MS:,.0f} ms"))
    return lines


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
        "baseline of benchmarks/baseline.py, on a fresh embedded broker and fresh chdb stores.",
        epilog="Targets: >= 10,000 events/s per worker process; metric p99 < 2 s after its window closes at "
        "1,000 events/s; RSS < 1.5 GB and flat. Takes about 15 minutes with the defaults on 2 cores, more if it "
        "waits for a quiet machine.",
    )
    parser.add_argument("--phases", nargs="+", choices=["throughput", "latency", "components"],
                        default=["throughput", "latency", "components"], help="what to measure (default: all)")
    parser.add_argument("--worker-processes", type=int, nargs="+", default=[1], metavar="N",
                        help="a throughput arm per count: `llmwatch worker --processes N` on the same backlog, "
                        "e.g. `1 2` (default %(default)s)")
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
    parser.add_argument("--metric-deadline-seconds", type=float, default=60,
                        help="latency phase: a window whose metric is not queryable this long after the window "
                        "ends is a miss (default %(default)s)")
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
                        help="per-processor phase: runs per step, the fastest is kept (default %(default)s)")
    add_quiet_args(parser)
    parser.add_argument("--py-spy", metavar="EXE", help="after the throughput arms, profile a further worker on the "
                        "same backlog (and its embedder) with this py-spy for --profile-seconds")
    parser.add_argument("--profile-at", type=float, default=0.3,
                        help="start py-spy at this share of the events stored (default %(default)s)")
    parser.add_argument("--profile-seconds", type=float, default=30, help="py-spy duration (default %(default)s)")
    parser.add_argument("--out", type=Path, help="write the markdown section into this file (replacing an older "
                        "one); default: print it")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (stores and logs)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
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

"""The dashboard's Overview on real volumes: each of its queries, and the whole page, over an embedded store
holding N inference events (10,000,000 by default) spread over the last days (7 by default), plus the metric
points the window job would have computed from them (10-s and 60-s windows, 16 series, bias and drift points)
and a few alerts.

    python benchmarks/dashboard.py --out benchmarks/RESULTS.md          # 10 M events over 7 days

Rows are made in the store by INSERT ... SELECT (the worker would take hours to ingest 10 M events here); the
queries are the dashboard's own, run the way the worker runs a `llmwatch sql` query (`run_query` on a client
of its own, read-only, parameters bound), so only the loopback HTTP hop is left out. Target: each Overview
query within 300 ms at p95 for every range.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    Contention,
    MachineCpu,
    add_quiet_args,
    code_state,
    load_average,
    log,
    machine,
    pct,
    wait_for_quiet,
    write_section,
)
from llmwatch.dashboard import queries  # noqa: E402
from streams.settings import Retention  # noqa: E402
from streams.store.client import connect, migrate  # noqa: E402
from streams.store.sql import QueryResult, run_query  # noqa: E402

WINDOWS = (10, 60)
"""The worker's default windows: what the dashboard reads unless more are configured."""
FILLED = (10, 60, 600)
"""Windows whose points are in the store: a 600-s window as well, for the arm that configures one."""
SERIES = [(f"model-{m}", adapter, pv) for m in range(4) for adapter in ("", "adapter-v1") for pv in ("v1", "v2")]
PER_SERIES = ["requests", "error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p50_ms",
              "ttft_p95_ms", "output_tokens_per_second", "prompt_tokens_total", "completion_tokens_total",
              "toxic_rate", "prompt_toxicity_mean", "response_toxicity_mean", "feedback_count", "thumbs_down_rate",
              "score_mean", "correction_rouge_l_mean", "correction_bleu_mean", "window.series_complete"]
BIAS_POINTS = {10: 10, 60: 40, 600: 40}
"""Bias points per series and window: few groups reach the minimum sample in 10 s, more in 60 s."""
GLOBAL = [("drift.score", f) for f in ("prompt_embedding", "response_embedding", "prompt_length", "response_length",
                                       "refusal")] + [("drift.detected", "prompt_embedding"),
                                                      ("drift.window_detected", ""), ("window.complete", "")]

INFERENCE_SQL = """
INSERT INTO inference_events (event_id, schema_version, timestamp, request_id, model, adapter, prompt, response_text,
    prompt_tokens, completion_tokens, latency_ms, ttft_ms, status, prompt_template, prompt_template_version, user_id,
    session_id, cohort, language, prompt_toxicity, response_toxicity, toxic, refusal, sentiment, prompt_length)
SELECT generateUUIDv4(number), 1,
       now64(3) - toIntervalMillisecond(intDiv(number * 86400000 * {days:UInt32}, {n:UInt64})),
       concat('bench-', toString(number)), concat('model-', toString(number % 4)),
       if(intDiv(number, 4) % 2 = 0, NULL, 'adapter-v1'), 'How do I reset my password?',
       'Open Settings, then Security.', 9, 7, 100 + cityHash64(number) % 2000, 20 + cityHash64(number, 1) % 200,
       if(number % 100 = 0, 'error', 'ok'), 'support-chat', if(intDiv(number, 8) % 2 = 0, 'v1', 'v2'),
       concat('user-', toString(number % 50000)), concat('session-', toString(intDiv(number, 5))),
       if(number % 3 = 0, 'free', 'pro'), 'en', (cityHash64(number, 2) % 100) / 1000,
       (cityHash64(number, 3) % 100) / 1000, number % 50 = 0, number % 40 = 0, 0.3, 27
FROM numbers({n:UInt64})
"""

POINTS_SQL = """
INSERT INTO metric_points (event_id, schema_version, timestamp, name, value, window_start, window_seconds, model,
    adapter, prompt_version, labels)
SELECT generateUUIDv4(), 1, now64(3), p.1, 0.05 + (cityHash64(w, p.1, s.1, s.2, s.3) % 1000) * p.4, w,
       {seconds:UInt32}, s.1, s.2, s.3, CAST(if(p.2 = '', [], [(p.2, p.3)]), 'Map(String, String)')
FROM (SELECT toDateTime64(toStartOfInterval(now() - toIntervalDay({days:UInt32}), toIntervalSecond({seconds:UInt32})),
                           3, 'UTC') + toIntervalSecond(number * {seconds:UInt32}) AS w
      FROM numbers(intDiv(86400 * {days:UInt32}, {seconds:UInt32})))
ARRAY JOIN {series:Array(Tuple(String, String, String))} AS s
ARRAY JOIN {points:Array(Tuple(String, String, String, Float64))} AS p
"""


def scalar(client: Any, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def fill(client: Any, events: int, days: int) -> dict[str, float]:
    took = {}
    started = time.monotonic()
    client.command(INFERENCE_SQL, parameters={"n": events, "days": days}, settings={"max_insert_threads": 2})
    took["inference_events"] = time.monotonic() - started
    started = time.monotonic()
    for seconds in FILLED:
        points = [(name, "", "", 1.0) for name in PER_SERIES]
        points += [(f"bias.{m}.gap", "attribute", f"attr-{i}", 0.0005)
                   for i in range(BIAS_POINTS[seconds] // 4) for m in ("toxicity_rate", "refusal_rate",
                                                                         "negative_feedback_rate", "sentiment")]
        client.command(POINTS_SQL, parameters={"seconds": seconds, "days": days, "series": SERIES, "points": points})
        client.command(POINTS_SQL, parameters={"seconds": seconds, "days": days, "series": [("", "", "")],
                                               "points": [(n, "feature" if f else "", f, 0.001) for n, f in GLOBAL]})
    took["metric_points"] = time.monotonic() - started
    client.command("INSERT INTO alerts (event_id, schema_version, timestamp, rule, state, severity, metric, value, "
                   "threshold, model, adapter, fingerprint, message) SELECT generateUUIDv4(), 1, "
                   "now64(3) - toIntervalSecond(number * 60), concat('rule-', toString(number % 7)), "
                   "if(number % 2 = 0, 'firing', 'resolved'), 'warning', 'latency_p99_ms', 3000, 2500, "
                   "concat('model-', toString(number % 4)), '', concat('fp-', toString(number % 40)), 'bench' "
                   "FROM numbers(2000)")
    return took


def timed(client: Any, sql: str, parameters: Mapping[str, Any], repeat: int) -> list[float]:
    for _ in range(5):
        run_query(client, sql, parameters)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        run_query(client, sql, parameters)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=7, help="spread events and metric points over this many days")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per query and range")
    parser.add_argument("--out", type=Path, help="write the section into this results file")
    add_quiet_args(parser)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="llmwatch-dashboard-bench-"))
    try:
        client = connect(f"chdb://{folder}")
        migrate(client, Retention())
        log(f"filling {args.events:,} inference events and their metric points (load {load_average()[0]:.1f})")
        took = fill(client, args.events, args.days)
        settle = time.monotonic()
        while scalar(client, "SELECT count() FROM system.merges") and time.monotonic() - settle < 300:
            time.sleep(1)  # measure the steady state, not the merges that follow a bulk fill
        counts = {t: scalar(client, f"SELECT count() FROM {t}") for t in ("inference_events", "metric_points")}
        parts = {t: scalar(client, f"SELECT count() FROM system.parts WHERE active AND table = '{t}'")
                 for t in (*counts, "overview_windows")}
        log(f"filled: {counts} in {took}; active parts {parts}")

        def read(sql: str, parameters: Mapping[str, Any]) -> QueryResult:
            own = connect(f"chdb://{folder}")  # the worker runs each query on a client of its own
            try:
                return run_query(own, sql, parameters)
            finally:
                own.close()

        asyncio.run(wait_for_quiet(args.quiet_cores, args.quiet_wait))
        load_before = load_average()
        first = MachineCpu.now()
        rows = []
        arms = [(name, WINDOWS) for name in queries.RANGES] + [("7d", FILLED)]
        for name, windows in arms:
            span = queries.span(name, windows)
            cases = [("series (charts + summary)", queries.SERIES_SQL, span.parameters),
                     ("drift", queries.DRIFT_SQL, span.parameters), ("firing alerts", queries.FIRING_SQL, {})]
            for label, sql, parameters in cases:
                samples = timed(client, sql, parameters, args.repeat)
                result_rows = len(run_query(client, sql, parameters).rows)
                rows.append((name, windows, span, label, result_rows, samples))
                log(f"  {name:>4} {label:<26} p50 {pct(samples, 50):7.1f} ms  p95 {pct(samples, 95):7.1f} ms")
            page = []
            for _ in range(max(args.repeat // 3, 5)):
                started = time.perf_counter()
                queries.overview(read, span)
                page.append((time.perf_counter() - started) * 1000)
            rows.append((name, windows, span, "whole Overview (3 queries, own client each)", 0, page))
            log(f"  {name:>4} whole page p50 {pct(page, 50):7.1f} ms  p95 {pct(page, 95):7.1f} ms")
        lookups = timed(client, queries.REQUESTS_SQL["request"], {"q": f"bench-{args.events // 2}"}, args.repeat)
        contention = Contention.between(first, MachineCpu.now())
        client.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    def worst(default: bool) -> float:
        return max(pct(s, 95) for _, windows, _, label, _, s in rows
                   if not label.startswith("whole") and (windows == WINDOWS) == default)
    lines = [
        f"## Dashboard: Overview queries over {args.events:,} inference events",
        "",
        f"Run on {time.strftime('%Y-%m-%d')}: {machine()}. Code: {code_state()}. Store: chdb (in-process), one "
        f"fresh store; load average {load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f} before "
        f"measuring, {contention.text()}.",
        "",
        "    python benchmarks/dashboard.py --out benchmarks/RESULTS.md",
        "",
        f"Store: {counts['inference_events']:,} inference events over the last {args.days} day(s) (16 series: 4 "
        f"models x 2 adapters x 2 prompt versions) and {counts['metric_points']:,} metric points for 10-s, 60-s and "
        "600-s windows "
        f"(the window job's names per series, {BIAS_POINTS[10]}/{BIAS_POINTS[60]}/{BIAS_POINTS[600]} bias points per "
        "series and "
        f"window, drift points), filled by INSERT ... SELECT in {took['inference_events']:.0f} s and "
        f"{took['metric_points']:.0f} s; active parts at measurement: {parts}. Each query: 5 warm-up runs, then "
        f"{args.repeat} timed (`run_query`, read-only, parameters bound; the series query reads `overview_windows`, "
        "migration 0009; every read FINAL); the whole page opens a client per query as the worker does (about "
        "11 ms each). The loopback HTTP hop to the worker is not included.",
        "",
        "| range | windows computed | window read / bucket | query | rows out | p50 (ms) | p95 (ms) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for name, windows, span, label, out, samples in rows:
        lines.append(f"| {name} | {', '.join(map(str, windows))} s | {span.window} s / {span.bucket} s | {label} | "
                     f"{out:,} | {pct(samples, 50):.1f} | {pct(samples, 95):.1f} |")
    lines += [
        "",
        f"Requests page, a lookup by request id over the {counts['inference_events']:,} events: p50 "
        f"{pct(lookups, 50):.1f} ms, p95 {pct(lookups, 95):.1f} ms (not an Overview query; no target).",
        "",
        f"Target, each Overview query within 300 ms at p95, with the default windows (10 s, 60 s): "
        f"{'**met**' if worst(True) <= 300 else '**missed**'} (worst p95 {worst(True):.1f} ms); with a 600-s window "
        f"computed as well (`LLMWATCH_METRICS__WINDOW_SECONDS='[10, 60, 600]'`), the 7-day range reads it: worst "
        f"p95 {worst(False):.1f} ms.",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    if args.out:
        write_section(args.out, section)


if __name__ == "__main__":
    main()

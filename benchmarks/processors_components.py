"""Processors benchmark, phase 3: what each processor costs on its own, and what that adds up to per event.

Why it exists: a rate for the whole worker does not say which processor to make faster. How: in one child
process (no broker; one fresh chdb store), the same synthetic traffic goes through each step alone: decode,
scoring and its parts, row building, store insert, feedback, sentence embedding, and the window job's reads
(`streams.store.windows`) and families on 10-s and 60-s windows (and again once the table is large). Times
are the best of --repeat runs (the machine is shared: the least disturbed), and the machine's contention over
the phase is recorded. Run by

    python benchmarks/processors.py --phases components --out benchmarks/RESULTS.md

which starts this module as a child: `python -m benchmarks.processors_components CONFIG_JSON`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.common import (
    DEFAULTS,
    REPO,
    RESULT_PREFIX,
    Contention,
    MachineCpu,
    child_result,
    log,
    peak_rss_kib,
)
from benchmarks.stack import (
    at_time,
)
from llmwatch.traffic import feedback_for, inference_event
from schemas.events import FeedbackEvent, InferenceEvent
from streams.settings import Settings

TARGET_RATE = 10_000
T = TypeVar("T")


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
    from processors.families.drift import EMBEDDING_FIELDS, TEXT_FEATURES, DriftReference, drift_metrics
    from processors.families.feedback import correction_similarity, feedback_metrics
    from processors.families.latency import latency_metrics
    from processors.families.toxicity import toxicity_metrics
    from processors.scoring import Scorers, scored_rows
    from processors.text_signals import GroupLexicon, is_refusal
    from processors.toxicity import load_toxicity_scorer
    from processors.validation import Limits, RawRecord, decode
    from processors.windows import Window, metric_point
    from schemas.events import ScoredInferenceEvent, TextEmbedding
    from schemas.tables import columns, to_rows
    from streams.settings import Retention
    from streams.store.client import connect, migrate
    from streams.store.windows import fetch_feedback, fetch_inference, fetch_reference, fetch_window_embeddings

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
    prompts = [e.prompt_text for e in sample]
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
    costs.append(Cost("ingest", "of which: `schemas.tables.to_rows` (the fields read in column order)", batch, seconds))

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
    _, seconds = timed(lambda: _load_model(model_path, None, os.getppid()))  # in this process: its parent is its own
    info["embed_load_seconds"] = seconds
    encode(["warm-up"])
    embedded_rows: list[TextEmbedding] = []
    sentences = 0
    encode_seconds = 0.0
    for start in range(0, len(chosen), 256):  # Embedder.run takes up to 256 events per call
        chunk = chosen[start:start + 256]
        answered = [e for e in chunk if e.response_text]
        texts = [e.prompt_text for e in chunk] + [e.response_text or "" for e in answered]
        vectors, seconds = timed(partial(encode, texts))
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
        inference, fetch_seconds = timed(lambda: fetch_inference(client, window.start, window.end), repeat)
        n = len(inference)
        costs.append(Cost("window", f"read: `fetch_inference`{table_note}", n, fetch_seconds, seconds_long))
        fb, seconds = timed(lambda: fetch_feedback(client, window.start, window.end), repeat)
        costs.append(Cost("window", f"read: `fetch_feedback` (LEFT JOIN inference_events){table_note}", n, seconds,
                          seconds_long))
        if table_note:
            return
        embeddings, seconds = timed(lambda: fetch_window_embeddings(client, window.start, window.end), repeat)
        costs.append(Cost("window", "read: `fetch_window_embeddings`", n, seconds, seconds_long))
        (vectors, rows), seconds = timed(lambda: fetch_reference(client, metrics.drift_reference_size), repeat)
        reference = DriftReference(vectors, rows[list(TEXT_FEATURES)])
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
    info["table_rows"] = int(str(client.command("SELECT count() FROM inference_events")))
    info["feedback_rows"] = int(str(client.command("SELECT count() FROM feedback_events")))
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
        done = subprocess.run([sys.executable, "-m", "benchmarks.processors_components", json.dumps(config)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=errors, check=False)
    if done.returncode:
        raise RuntimeError(f"the per-processor child failed ({done.returncode}); see {workdir / 'components.log'}")
    result: dict[str, Any] = child_result(done.stdout)
    result["contention"] = Contention.between(before, MachineCpu.now()).text()
    return result


def render_components(data: dict[str, Any], feedback_ratio: float, steady_rate: float | None) -> list[str]:
    """steady_rate: the throughput phase's worker rate, if it ran (one more column of the model)."""
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
    lines += render_per_event(costs, feedback_ratio)
    lines += ["", per_event_summary(costs, feedback_ratio, steady_rate)]
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


def embedder_us(costs: Sequence[Cost], feedback_ratio: float, rate: float) -> float:
    return sum(v for n, v in per_event_costs(costs, feedback_ratio, rate) if "(own process" in n)


def per_event_summary(costs: Sequence[Cost], feedback_ratio: float, steady_rate: float | None) -> str:
    rates = [1000.0, *([steady_rate] if steady_rate and not math.isnan(steady_rate) else []), float(TARGET_RATE)]
    parts = []
    for rate in rates:
        total, window = worker_us(costs, feedback_ratio, rate)
        parts.append(f"{total:,.0f} µs at {rate:,.0f} events/s (window job {window:,.0f}; with the embedder process "
                     f"{total + embedder_us(costs, feedback_ratio, rate):,.0f})")
    return ("Worker CPU per ingested inference event from these costs (decode, scoring and rows, insert, feedback, "
            "window job; Faust's own per-message work not included), in the worker process and with its embedder "
            "process added: " + ", ".join(parts) + ". With the worker process's share alone, one core (one GIL) is "
            f"full at **{saturation_rate(costs, feedback_ratio):,.0f} events/s**.")


def render_per_event(costs: Sequence[Cost], ratio: float) -> list[str]:
    rates = [1000.0, float(TARGET_RATE)]
    tables = [dict(per_event_costs(costs, ratio, rate)) for rate in rates]
    order = per_event_costs(costs, ratio, float(TARGET_RATE))
    lines = ["", "Each processor's cost per ingested inference event (µs of CPU; window steps from the two window "
             "sizes above, linear in events per window; feedback at its share of events), slowest first:", "",
             "| processor | at 1,000 events/s | at 10,000 events/s |", "|---|---:|---:|"]
    for name, _ in order:
        lines.append(f"| {name} | " + " | ".join(f"{t[name]:,.1f}" for t in tables) + " |")
    return lines


if __name__ == "__main__":
    print(RESULT_PREFIX + json.dumps(component_costs(json.loads(sys.argv[1]))), flush=True)

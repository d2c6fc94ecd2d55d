"""The event loop's ingest path before the store, in CPU per event, for this tree and another commit side by side.

Why it exists: decode and row building are a few µs per event each, too little for a whole-worker rate on a
shared machine to show; CPU time (`time.process_time`) of the same calls on the same events does. How: for each
tree (this one, and `--against REF` laid out by `git archive`), a child process with that tree first on its
path times, best of --repeat: `validation.decode` per record, pydantic alone on the same records and on the
whole batch as one JSON array (an idea not taken: it was slower, and one bad record fails the whole array),
`tables.to_rows`, `scoring.scored_rows`, and
`Ingest.__call__` on inference records with the real scorers and a writer that keeps nothing (decode, scoring
and rows: what the event loop does per batch before the store thread). The trees run alternately, --rounds
times, and the best of all rounds is reported. Run by

    python benchmarks/ingest_path.py --against c0ce70b --events 5000

This file imports nothing from `benchmarks` so that the child runs the same measuring code on either tree.
CPU time is not immune to a shared machine (a busy sibling hyperthread slows the same instructions): on
2 shared cores single steps varied by +-15% between rounds, so compare the best of several rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PREFIX = "RESULT "


def measure(events: int, repeat: int, seed: int) -> dict[str, float]:
    """µs of CPU per inference event for each step, with the code first on sys.path."""
    from pydantic import TypeAdapter
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from llmwatch.traffic import inference_event
    from processors.ingest import Ingest
    from processors.scoring import Scorers, scored_rows
    from processors.text_signals import GroupLexicon
    from processors.toxicity import load_toxicity_scorer
    from processors.validation import Limits, RawRecord, decode
    from schemas.events import Event, InferenceEvent, ScoredInferenceEvent
    from schemas.tables import Rejected, to_rows
    from streams.settings import Settings

    settings = Settings()
    metrics = settings.metrics
    rng = random.Random(seed)
    sample = [inference_event(rng) for _ in range(events)]
    records = [RawRecord("llm.inference", i % 4, i, e.model_dump_json().encode(), 1_700_000_000_000 + i)
               for i, e in enumerate(sample)]
    limits = Limits(settings.max_event_bytes, settings.dead_letter_raw_bytes, {"events": 30})
    scorers = Scorers(load_toxicity_scorer(metrics), metrics.toxicity_threshold,
                      GroupLexicon.load(metrics.group_lexicon), SentimentIntensityAnalyzer())

    class Discard:
        async def write(self, batch: Sequence[Event]) -> list[Rejected]:
            to_rows(batch)
            return []

        async def write_rows(self, model: type[Event], rows: Sequence[Sequence[Any]]) -> list[Rejected]:
            return []

    async def no_dead_letters(_: Sequence[Any]) -> None:
        return None

    ingest = Ingest(Discard(), no_dead_letters, limits,
                    enrich={InferenceEvent: (ScoredInferenceEvent, lambda batch: scored_rows(batch, scorers))})
    batch = settings.ingest_batch_size
    whole = TypeAdapter(list[InferenceEvent])
    steps: dict[str, Callable[[], object]] = {
        "decode per record (`validation.decode`)": lambda: [decode(r, InferenceEvent, limits) for r in records],
        "of which pydantic alone (`model_validate_json` per record)": lambda: [
            InferenceEvent.model_validate_json(r.value or b"") for r in records],
        "not taken: the batch as one JSON array (`TypeAdapter(list[InferenceEvent])`)": lambda: whole.validate_json(
            b"[" + b",".join(r.value or b"" for r in records) + b"]"),
        "rows (`tables.to_rows`)": lambda: to_rows(sample),
        "scoring + rows (`scoring.scored_rows`)": lambda: scored_rows(sample, scorers),
        f"`Ingest.__call__` in batches of {batch:,} (decode, scoring, rows; no store)": lambda: [
            asyncio.run(ingest(records[i:i + batch], InferenceEvent)) for i in range(0, len(records), batch)],
    }
    result = {}
    for name, step in steps.items():
        best = float("inf")
        for _ in range(repeat):
            started = time.process_time()
            step()
            best = min(best, time.process_time() - started)
        result[name] = best / events * 1e6
    return result


def run_tree(tree: Path, events: int, repeat: int, seed: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps([events, repeat, seed])], cwd=tree,
                          env=env, stdout=subprocess.PIPE, check=True)
    line = next(line for line in done.stdout.decode().splitlines() if line.startswith(PREFIX))
    result: dict[str, float] = json.loads(line[len(PREFIX):])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="HEAD", help="the commit to compare with (default HEAD)")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.remove(str(Path(__file__).resolve().parent))  # its processors.py would hide the package
        print(PREFIX + json.dumps(measure(*json.loads(args.child))), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="ingest_path_") as tmp:
        archive = subprocess.run(["git", "archive", args.against], cwd=REPO, stdout=subprocess.PIPE, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        trees = {args.against: Path(tmp), "this tree": REPO}
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for label, tree in trees.items():
                found = run_tree(tree, args.events, args.repeat, args.seed)
                best[label] = {k: min(v, best.get(label, {}).get(k, v)) for k, v in found.items()}
    before, after = best[args.against], best["this tree"]
    print(f"µs of CPU per inference event, best of {args.repeat} x {args.rounds} rounds, {args.events:,} events\n")
    print(f"| step | {args.against} | this tree | change |\n|---|---:|---:|---:|")
    for name in after:
        old = before.get(name)
        change = f"{(after[name] - old) / old:+.0%}" if old else "n/a"
        print(f"| {name} | {old if old is None else f'{old:,.1f}'} | {after[name]:,.1f} | {change} |")


if __name__ == "__main__":
    main()

"""Start-up benchmark: seconds from `llmwatch worker` starting to ready (worker.json written) and to
consuming (the first row of a waiting backlog stored), a few runs in a row, and the worker process's own CPU
seconds to ready (its embedder apart), which a shared machine's load does not inflate as it does wall time.

Why it exists: a worker restarted by a deploy or a crash should be back to consuming in seconds; heavy
imports and model loading on that path had made it ~20 s. Each run is a fresh worker (own store, group
and topics) on one embedded broker; one event waits on its inference topic before the worker starts.

    python benchmarks/startup.py --runs 3
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time

from benchmarks.common import free_port, log, process_cpu_seconds
from benchmarks.ingest import produce_backlog
from benchmarks.stack import Worker, bench_topics
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics


async def one_run(bootstrap: str, workdir: Path, n: int) -> tuple[float, float, float]:
    topics = bench_topics(f"startup{n}")
    ensure_topics(bootstrap, topics)
    await produce_backlog(bootstrap, topics.inference, 1, seed=n)
    worker = Worker(bootstrap, topics, workdir, f"worker{n}")
    started = time.monotonic()
    worker.start()
    ready = time.monotonic() - started
    assert worker.process is not None
    cpu = process_cpu_seconds(worker.process.pid)  # its own CPU to ready: what a busy machine does not inflate
    try:
        while not int(worker.sql("SELECT count() FROM inference_events")[0]):
            await asyncio.sleep(0.05)
        consuming = time.monotonic() - started
    finally:
        worker.stop()
    return ready, consuming, cpu


async def benchmark(runs: int, workdir: Path) -> list[tuple[float, float, float]]:
    results = []
    with EmbeddedBroker(free_port(), log_file=workdir / "broker.log") as broker:
        for n in range(runs):
            results.append(await one_run(broker.bootstrap_servers, workdir, n))
            log(f"run {n + 1}: ready {results[-1][0]:.1f} s, first row stored {results[-1][1]:.1f} s, "
                f"worker CPU to ready {results[-1][2]:.1f} s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="llmwatch-startup-"))
    try:
        results = asyncio.run(benchmark(args.runs, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ready, consuming, cpu = zip(*results, strict=True)
    print(f"ready: median {statistics.median(ready):.1f} s ({', '.join(f'{r:.1f}' for r in ready)}); "
          f"first row stored: median {statistics.median(consuming):.1f} s "
          f"({', '.join(f'{c:.1f}' for c in consuming)}); worker CPU to ready: median {statistics.median(cpu):.1f} s "
          f"({', '.join(f'{c:.1f}' for c in cpu)})")


if __name__ == "__main__":
    main()

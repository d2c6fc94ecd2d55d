"""`llmwatch worker --processes 2` on the embedded store: both processes take partitions, the second writes
through the first, a killed one loses nothing and duplicates nothing, and stopping the first stops all."""

from __future__ import annotations

import json
import random
import signal
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from llmwatch.traffic import inference_event
from schemas.events import InferenceEvent
from streams.settings import Metrics
from tests.integration.conftest import START_TIMEOUT, Worker, wait_until

pytestmark = pytest.mark.integration

N = 12_000
KEYS = 16
"""Adapters, so that events are keyed over every partition whichever two partitions each process gets."""


def events(seed: str, count: int) -> list[InferenceEvent]:
    rng = random.Random(seed)
    return [inference_event(rng).model_copy(update={"adapter": f"adapter-{n % KEYS}"}) for n in range(count)]


def stored_by(port: int) -> int | None:
    """Rows of inference events this process has stored (its writer's count), or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/llmwatch/health", timeout=10) as response:
            health: dict[str, Any] = json.loads(response.read())
    except OSError:
        return None
    return int(health["writer"].get("inference_events", {}).get("rows", 0))


def second_process(worker: Worker) -> psutil.Process | None:
    assert worker.process is not None
    port = worker.settings.web_port + 1  # Faust retitles the process (cmdline and environ): found by its port
    found = [p for p in psutil.Process(worker.process.pid).children()
             if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in p.net_connections("tcp"))]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_two_processes_share_the_partitions_and_a_killed_one_loses_nothing(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(worker_processes=2, ingest_batch_size=200).start()
    port = worker.settings.web_port
    child: psutil.Process = wait_until(lambda: second_process(worker), 60, "the second worker process")
    wait_until(lambda: stored_by(port + 1) is not None, START_TIMEOUT, "the second worker process to answer")
    assert child.children() == [], "only the first process runs an embedder"

    first, second = events("processes-first", N // 2), events("processes-second", N // 2)
    with worker.publisher() as publisher:
        for event in first:
            publisher.publish(event)
    wait_until(lambda: worker.count("SELECT count() FROM inference_events") >= N // 2, 240, "the first half")
    by_owner, by_child = stored_by(port), stored_by(port + 1)
    assert by_owner and by_child, f"each process should have stored some: {by_owner} and {by_child}"
    assert by_owner + by_child >= N // 2

    with worker.publisher() as publisher:
        for event in second[:N // 4]:
            publisher.publish(event)
    wait_until(lambda: (stored_by(port + 1) or 0) > by_child, 120, "the second process to store more")
    child.send_signal(signal.SIGKILL)
    wait_until(lambda: "worker process 1 (pid" in worker.log_path.read_text(), 30, "the first process to see it end")
    with worker.publisher() as publisher:  # keyed over every partition: the killed process's must be taken over
        for event in second[N // 4:]:
            publisher.publish(event)

    wait_until(lambda: worker.count("SELECT uniqExact(request_id) FROM inference_events") >= N, 240,
               f"{N} request ids after the second process was killed")
    seen = Counter(row[0] for row in worker.sql("SELECT request_id FROM inference_events"))
    assert set(seen) == {event.request_id for event in first + second}
    assert [request_id for request_id, times in seen.items() if times > 1] == []
    assert worker.stop() == 0, worker.log_tail(80)


def test_stopping_the_first_process_stops_every_process(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(worker_processes=2, metrics=Metrics(embed_per_second=0)).start()
    wait_until(lambda: stored_by(worker.settings.web_port + 1) is not None, START_TIMEOUT,
               "the second worker process to answer")
    assert worker.process is not None
    tree = psutil.Process(worker.process.pid).children(recursive=True)
    assert second_process(worker) in tree
    assert worker.stop(signal.SIGTERM) == 0
    _, left = psutil.wait_procs(tree, timeout=10)  # multiprocessing's resource tracker goes at EOF, a moment later
    assert left == []

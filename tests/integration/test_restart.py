"""A worker killed mid-stream and restarted leaves no duplicate and no missing row."""

from __future__ import annotations

import random
import signal
from collections.abc import Callable

import pytest

from llmwatch.traffic import inference_event
from tests.integration.conftest import Worker, wait_until

pytestmark = pytest.mark.integration

N = 20_000


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(make_worker: Callable[[], Worker]) -> None:
    worker = make_worker()
    rng = random.Random(5)
    with worker.publisher() as publisher:
        for _ in range(N):
            publisher.publish(inference_event(rng))
    worker.settings = worker.settings.model_copy(update={"ingest_batch_size": 500})
    worker.start()
    wait_until(lambda: worker.count("SELECT count() FROM inference_events") >= N // 20, 120, "some rows")
    assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
    worker.start()
    assert worker.health()["ingest"].get("inference_events", {}).get("received", 0) < N, \
        "the first worker had already finished: nothing was tested"

    wait_until(lambda: worker.count("SELECT count() FROM inference_events") == N, 240, f"{N} rows after the restart")
    assert worker.count("SELECT uniqExact(event_id) FROM inference_events") == N
    assert worker.count("SELECT count() - uniqExact(event_id) FROM inference_events") == 0
    worker.stop()

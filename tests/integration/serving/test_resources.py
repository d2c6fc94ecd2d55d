"""The worker scrapes the real vLLM's /metrics into `resources` points, and prices the self-hosted model at
the utilisation it measured there."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from schemas import InferenceEvent
from serving.vllm.launcher import VllmServer
from streams.settings import Cost, Metrics, Resources, SelfHostedCost, Serving
from tests.integration.conftest import Worker, wait_until
from tests.integration.serving.conftest import BASE_MODEL

pytestmark = pytest.mark.integration


def complete(vllm: VllmServer, n: int) -> None:
    for i in range(n):
        response = httpx.post(f"{vllm.url}/v1/completions", timeout=120,
                              json={"model": BASE_MODEL, "prompt": f"Count to {i + 3}:", "max_tokens": 16})
        assert response.status_code == 200, response.text


def test_vllm_resources_land_in_metric_points_and_set_the_self_hosted_price(
        vllm: VllmServer, make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(serving=Serving(vllm_url=vllm.url), resources=Resources(scrape_seconds=2),
                         metrics=Metrics(embed_per_second=0),
                         cost=Cost(self_hosted={BASE_MODEL: SelfHostedCost(hourly_cost=3.6, tokens_per_second=1e6)}))
    worker.start()
    wait_until(lambda: worker.count("SELECT count() FROM metric_points WHERE name = 'vllm.requests_running' "
                                    f"AND model = '{BASE_MODEL}'"), 120, "vllm.requests_running points")
    complete(vllm, 3)
    measured = ("SELECT count() FROM metric_points WHERE name = 'vllm.generation_tokens_per_second' AND value > 0 "
                f"AND model = '{BASE_MODEL}' AND labels['instance'] = '{vllm.url.removeprefix('http://')}'")
    wait_until(lambda: worker.count(measured), 120, "a generation throughput above 0")
    names = {name for (name,) in worker.sql("SELECT DISTINCT name FROM metric_points WHERE name LIKE 'vllm.%'")}
    assert {"vllm.up", "vllm.requests_waiting", "vllm.kv_cache_usage", "vllm.prompt_tokens_per_second",
            "vllm.tokens_per_second", "vllm.queue_time_mean_seconds", "vllm.preemptions_per_second"} <= names

    with worker.publisher() as publisher:
        publisher.publish(InferenceEvent(request_id="priced-by-use", model=BASE_MODEL, prompt="hi", response_text="ho",
                                         prompt_tokens=10, completion_tokens=10, latency_ms=5))
    wait_until(lambda: worker.count("SELECT count() FROM inference_events WHERE request_id = 'priced-by-use'"), 60,
               "the priced event")
    ((version, total),) = worker.sql("SELECT price_version, cost_total FROM inference_events "
                                     "WHERE request_id = 'priced-by-use'")
    # a tiny server at 1M tokens/s full load is barely used: the 1% floor, far above the configured 50%'s price
    assert version.startswith("self-hosted:") and ":measured-" in version, version
    assert total > 20 * 3.6 / (3600 * 1e6 * 0.5)

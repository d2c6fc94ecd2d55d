"""Cost, the audit trail and erasure in a real worker on the real broker and store.

Events through the pipeline get their cost at ingest and cost metric points; a silence and an erasure made
with the CLI appear in `llmwatch audit`; `llmwatch forget` goes through the worker that owns the store and
leaves nothing of the user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from schemas import InferenceEvent
from streams.settings import Cost, Metrics, TokenPrice
from tests.integration.conftest import Worker, to_env, wait_until

pytestmark = pytest.mark.integration


def llmwatch(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmwatch", *args], capture_output=True, text=True,
                          env=os.environ | to_env(worker.settings) | {"COLUMNS": "300"}, timeout=180)


def test_costs_audit_and_forgetting_through_the_pipeline(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(cost=Cost(models={"costint": TokenPrice(input=1.0, output=2.0)}),
                         metrics=Metrics(window_seconds=(2,), feedback_horizon_seconds=0, embed_per_second=0))
    worker.start()
    with worker.publisher() as publisher:
        for i in range(20):
            publisher.publish(InferenceEvent(request_id=f"cost-{i}", model="costint", prompt="hello",
                                             response_text="hi", prompt_tokens=100, completion_tokens=10,
                                             latency_ms=50, user_id="zoe" if i < 5 else f"user-{i}"))
            time.sleep(0.05)
    wait_until(lambda: worker.count("SELECT count() FROM inference_events WHERE cost_total > 0") == 20, 120,
               "20 priced inference rows")
    each = (100 * 1.0 + 10 * 2.0) / 1e6
    assert abs(worker.sql("SELECT sum(cost_total) FROM inference_events")[0][0] - 20 * each) < 1e-12
    wait_until(lambda: worker.count("SELECT count() FROM metric_points WHERE name = 'cost_total' "
                                    "AND model = 'costint'") > 0, 120, "cost_total points")
    wait_until(lambda: worker.count("SELECT count() FROM metric_points WHERE name = 'cost.user_total' "
                                    "AND labels['user'] = 'zoe'") > 0, 60, "zoe among the top spenders")

    silenced = llmwatch(worker, "alerts", "silence", "latency_p99_high", "--for", "1h", "--comment", "deploy")
    assert silenced.returncode == 0, silenced.stderr
    forgot = llmwatch(worker, "forget", "--user", "zoe")
    assert forgot.returncode == 0, forgot.stderr
    assert "inference_events" in forgot.stdout and "erasure" in forgot.stdout
    assert worker.count("SELECT count() FROM inference_events WHERE user_id = 'zoe'") == 0
    assert worker.count("SELECT count() FROM metric_points WHERE labels['user'] = 'zoe'") == 0
    assert worker.count("SELECT count() FROM inference_events") == 15

    wait_until(lambda: worker.count("SELECT count() FROM audit WHERE action IN ('alert.silence', 'erasure')") == 2,
               60, "the silence and the erasure in the audit table")
    listed = llmwatch(worker, "audit", "--since", "1h")
    assert listed.returncode == 0, listed.stderr
    assert "alert.silence" in listed.stdout and "erasure" in listed.stdout
    assert worker.count("SELECT count() FROM audit WHERE position(after, 'zoe') > 0") == 0


def test_an_admin_route_change_is_in_the_audit_trail_under_the_keys_fingerprint(
        make_worker: Callable[..., Worker], tmp_path_factory: pytest.TempPathFactory) -> None:
    import httpx

    from schemas.events import key_fingerprint
    from streams.settings import Serving
    from tests.integration.conftest import free_port
    from tests.integration.serving.conftest import Gateway

    worker = make_worker().start()
    data_dir = tmp_path_factory.mktemp("audit-gateway")
    serving = Serving(vllm_url=f"http://127.0.0.1:{free_port()}", port=free_port(), admin_api_keys=["admin-secret"],
                      routes={"canary": {"smollm2-135m": 1.0}}, publish_timeout_seconds=2.0)
    settings = worker.settings.model_copy(update={"data_dir": data_dir, "serving": serving})
    gateway = Gateway(settings, data_dir / "gateway.log").start()
    try:
        response = httpx.delete(f"{gateway.url}/admin/routes/canary",
                                headers={"Authorization": "Bearer admin-secret"}, timeout=30)
        assert response.status_code == 200, response.text
        wait_until(lambda: worker.count("SELECT count() FROM audit WHERE action = 'route.delete'") == 1, 60,
                   "the route deletion in the audit table")
        actor, target, before, after = worker.sql("SELECT actor, target, before, after FROM audit")[0]
        assert (actor, target, after) == (key_fingerprint("admin-secret"), "canary", "null")
        assert '"smollm2-135m": 1.0' in before
        assert worker.count("SELECT count() FROM audit WHERE position(actor || before || after, 'admin-secret') > 0") \
            == 0
    finally:
        gateway.stop()

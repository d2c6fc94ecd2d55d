"""Alert rules in a real worker on the real broker and store, in real time (2-second windows).

A latency spike and a toxicity spike published through the pipeline each give exactly one firing and one
resolved alert, in the alerts table and on llm.alerts; a webhook receiver that was down at first still gets
them, signed; a worker killed mid-episode resumes it; an invalid edit of the rules file keeps the old rules.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from schemas import InferenceEvent
from streams.settings import Alerts, Metrics
from tests.integration.conftest import Worker, free_port, wait_until
from tests.integration.test_metrics import CLEAN, TOXIC, publish_for

pytestmark = pytest.mark.integration

SECRET = "webhook-secret"


class Receiver:
    """An Alertmanager webhook receiver that is not there until `start()`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[dict[str, Any]] = []
        self.signatures_ok: list[bool] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                receiver.signatures_ok.append(self.headers.get("X-Llmwatch-Signature") == expected)
                receiver.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


RULES = """
rules:
  - name: latency_spike
    metric: latency_p99_ms
    window_seconds: 2
    threshold: 1000
    min_requests: 5
    annotations:
      summary: "p99 {{ value | int }} ms on {{ labels.model }}"
    actions:
      webhooks: [{url: "http://127.0.0.1:PORT/hook", secret: "SECRET"}]
  - name: toxic_spike
    metric: toxic_rate
    window_seconds: 2
    threshold: 0.5
    min_requests: 5
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(RULES.replace("PORT", str(receiver.port)).replace("SECRET", SECRET))
    return path


@pytest.fixture(scope="module")
def alerts_worker(make_worker: Callable[..., Worker], rules_file: Path) -> Iterator[Worker]:
    worker = make_worker(metrics=Metrics(window_seconds=(2,), lateness_seconds=0.5, feedback_horizon_seconds=0,
                                         embed_per_second=0),
                         alerts=Alerts(rules_file=rules_file, reload_seconds=0.5, webhook_max_backoff_seconds=1.0))
    yield worker.start()
    if worker.process is not None:
        worker.stop()


def inference(model: str, latency_ms: float, response: str = "Open Settings, then Security.") -> Callable[
        [int], InferenceEvent]:
    def make(n: int) -> InferenceEvent:
        return InferenceEvent(request_id=f"{model}-{n}-{time.monotonic_ns()}", model=model, prompt="Say something.",
                              latency_ms=latency_ms, response_text=response)
    return make


def alerts(worker: Worker, rule: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in worker.sql(f"SELECT state, fingerprint FROM alerts WHERE rule = '{rule}' "
                                             "ORDER BY timestamp")]


def on_topic(worker: Worker) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(worker.settings.topics.alerts, bootstrap_servers=worker.settings.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000, group_id=None)
    try:
        return [json.loads(message.value) for message in consumer]
    finally:
        consumer.close()


def test_a_latency_spike_fires_once_and_resolves_once(alerts_worker: Worker, receiver: Receiver) -> None:
    publish_for(alerts_worker, 4, 20, inference("spiky", 100.0))
    publish_for(alerts_worker, 5, 20, inference("spiky", 3000.0))
    wait_until(lambda: alerts(alerts_worker, "latency_spike"), 60, "the latency alert to fire")
    receiver.start()  # the receiver was down when the alert fired: it gets it on a retry
    publish_for(alerts_worker, 5, 20, inference("spiky", 100.0))
    wait_until(lambda: len(alerts(alerts_worker, "latency_spike")) >= 2, 60, "the latency alert to resolve")
    time.sleep(3)  # nothing more may come of this episode
    stored = alerts(alerts_worker, "latency_spike")
    assert [state for state, _ in stored] == ["firing", "resolved"]
    assert len({fingerprint for _, fingerprint in stored}) == 1
    published = [a for a in on_topic(alerts_worker) if a["rule"] == "latency_spike"]
    assert [a["state"] for a in published] == ["firing", "resolved"]
    firing = published[0]
    assert firing["model"] == "spiky" and firing["value"] > 1000 and firing["message"].startswith("p99 ")
    assert 1 <= len(firing["request_ids"]) <= 5 and all(r.startswith("spiky-") for r in firing["request_ids"])
    wait_until(lambda: len(receiver.bodies) >= 2, 60, "the webhook to receive both alerts")
    assert all(receiver.signatures_ok)
    statuses = [body["status"] for body in receiver.bodies]
    assert statuses == ["firing", "resolved"]
    alert = receiver.bodies[0]["alerts"][0]
    assert receiver.bodies[0]["version"] == "4" and alert["labels"]["alertname"] == "latency_spike"
    assert alert["fingerprint"] == stored[0][1] and alert["startsAt"].endswith("Z")


def test_a_toxicity_spike_fires_once_and_resolves_once(alerts_worker: Worker) -> None:
    publish_for(alerts_worker, 3, 20, inference("talky", 80.0, CLEAN[0]))
    publish_for(alerts_worker, 4, 20, inference("talky", 80.0, TOXIC[0]))
    wait_until(lambda: alerts(alerts_worker, "toxic_spike"), 60, "the toxicity alert to fire")
    publish_for(alerts_worker, 4, 20, inference("talky", 80.0, CLEAN[1]))
    wait_until(lambda: len(alerts(alerts_worker, "toxic_spike")) >= 2, 60, "the toxicity alert to resolve")
    time.sleep(3)
    assert [state for state, _ in alerts(alerts_worker, "toxic_spike")] == ["firing", "resolved"]


def test_a_worker_killed_mid_episode_neither_repeats_nor_forgets_it(alerts_worker: Worker) -> None:
    publish_for(alerts_worker, 3, 20, inference("crashy", 100.0))
    publish_for(alerts_worker, 5, 20, inference("crashy", 3000.0))
    wait_until(lambda: alerts(alerts_worker, "latency_spike") and any(
        r[0] == "firing" for r in alerts_worker.sql("SELECT status FROM alert_state WHERE series['model'] = 'crashy'")),
        60, "the alert to fire and its state to be stored")
    assert alerts_worker.stop(signal.SIGKILL) != 0
    alerts_worker.start()
    publish_for(alerts_worker, 3, 20, inference("crashy", 3000.0))  # still breaching: no second firing
    publish_for(alerts_worker, 5, 20, inference("crashy", 100.0))
    wait_until(lambda: len([r for r in alerts_worker.sql(
        "SELECT state FROM alerts WHERE rule = 'latency_spike' AND model = 'crashy'")]) >= 2, 60,
        "the episode to resolve after the restart")
    time.sleep(3)
    states = [r[0] for r in alerts_worker.sql(
        "SELECT state FROM alerts WHERE rule = 'latency_spike' AND model = 'crashy' ORDER BY timestamp")]
    assert states == ["firing", "resolved"]


def test_an_invalid_edit_keeps_the_previous_rules_running(alerts_worker: Worker, rules_file: Path) -> None:
    good = rules_file.read_text()
    rules_file.write_text(good.replace("threshold: 1000", "threshold: [not a number]"))
    try:
        wait_until(lambda: "NOT reloaded" in alerts_worker.log_path.read_text(errors="replace"), 30,
                   "the worker to refuse the edit")
        assert "latency_spike" in alerts_worker.log_path.read_text(errors="replace").split("NOT reloaded")[-1]
        publish_for(alerts_worker, 3, 20, inference("after-edit", 100.0))
        publish_for(alerts_worker, 5, 20, inference("after-edit", 3000.0))
        wait_until(lambda: alerts_worker.sql("SELECT count() FROM alerts WHERE rule = 'latency_spike' "
                                             "AND model = 'after-edit'")[0][0], 60,
                   "the old latency rule to keep firing")
    finally:
        rules_file.write_text(good)

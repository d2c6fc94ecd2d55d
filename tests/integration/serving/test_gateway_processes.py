"""Two gateway processes behind one port (LLMWATCH_SERVING__GATEWAY_PROCESSES=2), as real processes in front of
the canned upstream, publishing to the real broker: both answer, each answered request is published once,
a feedback token minted by one is good in the other, /metrics counts for the whole gateway, the spool of a
process that no longer runs is adopted, and SIGTERM stops them all."""

from __future__ import annotations

import json
import signal
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest
from kafka import KafkaConsumer

from serving.gateway.spool import Record, Spool
from serving.gateway.spools import spool_dir
from streams.kafka.broker import EmbeddedBroker, port_open
from streams.kafka.topics import ensure_topics
from streams.settings import Serving, Settings
from tests.integration.conftest import free_port, wait_until
from tests.integration.serving.conftest import BASE_MODEL, CLIENT_KEY, FEEDBACK_KEY, Gateway, topics_for

pytestmark = pytest.mark.integration

CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}


def alive(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def connections_to_each(gateway: Gateway, processes: set[int]) -> dict[int, httpx.Client]:
    """One kept-alive connection per gateway process: new connections until the kernel gave each one."""
    by_pid: dict[int, httpx.Client] = {}
    for _ in range(200):
        client = httpx.Client(base_url=gateway.url, headers=CLIENT, timeout=30)
        pid = client.get("/health").json()["process"]["pid"]
        if pid in by_pid:
            client.close()
        else:
            by_pid[pid] = client
        if set(by_pid) == processes:
            return by_pid
    raise AssertionError(f"200 connections reached only the processes {sorted(by_pid)} of {sorted(processes)}")


def chat(client: httpx.Client, content: str) -> httpx.Response:
    response = client.post("/v1/chat/completions", json={
        "model": BASE_MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": content}]})
    assert response.status_code == 200, response.text
    return response


def request_ids_on(topic: str, bootstrap: str) -> Counter[str]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    try:
        return Counter(json.loads(message.value)["request_id"] for message in consumer)
    finally:
        consumer.close()


def requests_total(metrics: str) -> float:
    return sum(float(line.rpartition(" ")[2]) for line in metrics.splitlines()
               if line.startswith("llmwatch_gateway_requests_total{"))


def use_both(gateway: Gateway) -> tuple[list[int], list[httpx.Response]]:
    """The gateway's processes, and the requests they answered."""
    assert gateway.process is not None
    supervisor = gateway.process.pid
    members = wait_until(lambda: found if len(found := [child.pid for child in psutil.Process(supervisor).children()])
                         == 2 else None, 60, "two gateway processes")
    clients = connections_to_each(gateway, set(members))
    answered = []
    try:
        # Both answer requests; each on a fresh connection too, wherever the kernel sends it.
        for n in range(10):
            answered += [chat(client, f"Hi {n}") for client in clients.values()]
        for n in range(10):
            with httpx.Client(base_url=gateway.url, headers=CLIENT, timeout=30) as fresh:
                answered.append(chat(fresh, f"fresh {n}"))

        # A token minted by one process is good in the other, and a wrong one is refused there.
        first, second = clients.values()
        headers = {"Authorization": f"Bearer {FEEDBACK_KEY}"}
        for minted_by, checked_by in ((first, second), (second, first)):
            answer = chat(minted_by, "rate me")
            answered.append(answer)
            feedback = {"request_id": answer.json()["id"], "score": 1.0,
                        "feedback_token": answer.headers["x-feedback-token"]}
            assert checked_by.post("/v1/feedback", json=feedback, headers=headers).status_code == 202
            forged = feedback | {"feedback_token": "0" * 32}
            assert checked_by.post("/v1/feedback", json=forged, headers=headers).status_code == 403

        # /metrics counts for the whole gateway, whichever process answers it.
        assert [requests_total(client.get("/metrics").text) for client in clients.values()] == [len(answered)] * 2
    finally:
        for client in clients.values():
            client.close()
    return members, answered


def test_two_processes_share_the_port_publish_each_event_once_and_stop_together(
        broker: EmbeddedBroker, upstream: str, tmp_path: Path) -> None:
    topics = topics_for(uuid.uuid4().hex[:8])
    ensure_topics(broker.bootstrap_servers, topics)
    # What process 2 of an earlier, larger gateway left in its spool: process 0 adopts and publishes it.
    left = Spool(spool_dir(tmp_path, 2), 1 << 20)
    left.append([Record(topics.inference, b"orphan", json.dumps({"request_id": "orphan-1"}).encode())])
    left.close()
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers, topics=topics,
                        serving=Serving(vllm_url=upstream, port=free_port(), api_keys=[CLIENT_KEY],
                                        feedback_api_keys=[FEEDBACK_KEY], gateway_processes=2,
                                        publish_timeout_seconds=2.0),
                        _env_file=None)
    gateway = Gateway(settings, tmp_path / "gateway.log").start()
    try:
        members, answered = use_both(gateway)
    finally:
        code = gateway.stop(signal.SIGTERM)

    assert code == 0, gateway.log_tail()
    assert not [pid for pid in members if alive(pid)], "a gateway process outlived the gateway"
    assert not port_open("127.0.0.1", settings.serving.port)
    assert {path.name for path in (tmp_path / "spool" / "gateway").iterdir()} == {"0", "1"}
    published = request_ids_on(topics.inference, broker.bootstrap_servers)
    ids = [response.headers["x-request-id"] for response in answered]
    assert len(set(ids)) == len(ids)
    assert {request_id: published[request_id] for request_id in ids} == dict.fromkeys(ids, 1)
    assert published["orphan-1"] == 1
    assert "Traceback" not in gateway.log_path.read_text(errors="replace")

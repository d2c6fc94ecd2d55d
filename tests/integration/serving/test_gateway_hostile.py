"""The gateway as an attacker or a careless client would use it: a real gateway process and the real broker,
in front of the canned upstream (benchmarks/canned_upstream.py: vLLM's wire format, no model), since no
check here needs a model's answer.

Each test stands for one finding of the attack (issue 10): the event that stopped all publishing, the
input that froze the gateway, forged ids and feedback, metric labels, personal data, sizes, 500s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer

from serving.gateway.metrics import GatewayMetrics
from serving.gateway.recording import Exchange, inference_event
from serving.gateway.redaction import Redactor
from serving.gateway.sink import EventSink
from serving.gateway.spool import Record, Spool
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics
from streams.settings import Serving, Settings, Topics
from tests.integration.conftest import free_port
from tests.integration.serving.conftest import (
    ADMIN_KEY,
    BASE_MODEL,
    CLIENT_KEY,
    FEEDBACK_KEY,
    Gateway,
    topics_for,
)

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
MAX_EVENT_BYTES = 300_000
"""Below the default, so that requests the canned upstream accepts (aiohttp: 1 MiB at most) make events over it."""


@dataclass
class HostileGateway(Gateway):
    def env(self) -> dict[str, str]:
        return super().env() | {"LLMWATCH_MAX_EVENT_BYTES": str(self.settings.max_event_bytes)}


def gateway_settings(broker: EmbeddedBroker, topics: Topics, data_dir: Path, upstream: str,
                     **serving: Any) -> Settings:
    config = {"vllm_url": upstream, "port": free_port(), "api_keys": [CLIENT_KEY],
              "feedback_api_keys": [FEEDBACK_KEY], "admin_api_keys": [ADMIN_KEY], "publish_timeout_seconds": 2.0,
              "replay_max_backoff_seconds": 1.0, "routes": {"support": {BASE_MODEL: 50, "support-v4": 50}}} | serving
    return Settings(data_dir=data_dir, kafka_bootstrap_servers=broker.bootstrap_servers, topics=topics,
                    serving=Serving(**config), max_event_bytes=MAX_EVENT_BYTES, _env_file=None)


@pytest.fixture(scope="module")
def topics(broker: EmbeddedBroker) -> Topics:
    topics = topics_for(uuid.uuid4().hex[:8])
    ensure_topics(broker.bootstrap_servers, topics)
    return topics


@pytest.fixture(scope="module")
def gateway(broker: EmbeddedBroker, topics: Topics, upstream: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("hostile-gateway")
    gateway = HostileGateway(gateway_settings(broker, topics, data_dir, upstream), data_dir / "gateway.log").start()
    yield gateway
    if gateway.process is not None:
        gateway.stop()


def send(gateway: Gateway, method: str, path: str, key: str | None = CLIENT_KEY,
         headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
    headers = ({"Authorization": f"Bearer {key}"} if key else {}) | (headers or {})
    return httpx.request(method, f"{gateway.url}{path}", headers=headers, timeout=120, **kwargs)


def chat(gateway: Gateway, content: Any = "Hi", key: str | None = CLIENT_KEY, **fields: Any) -> httpx.Response:
    return send(gateway, "POST", CHAT, key=key, json={"model": BASE_MODEL, "max_tokens": 4,
                                                      "messages": [{"role": "user", "content": content}], **fields})


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    total = 0.0
    for line in gateway.metrics().splitlines():
        if line.startswith(name) and all(f'{key}="{value}"' in line for key, value in labels.items()):
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total


def published(gateway: Gateway, topic: str, request_ids: set[str], timeout: float = 60) -> dict[str, bytes]:
    """The messages of these requests on the topic, waited for; keyed by request id."""
    found: dict[str, bytes] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumer = KafkaConsumer(topic, bootstrap_servers=gateway.settings.bootstrap_servers,
                                 auto_offset_reset="earliest", consumer_timeout_ms=2000,
                                 fetch_max_bytes=4 * 2**20, max_partition_fetch_bytes=4 * 2**20)
        try:
            for message in consumer:  # ends after 2 s without messages, or once all are found
                request_id = json.loads(message.value).get("request_id")
                if request_id in request_ids:
                    found[request_id] = message.value
                if set(found) == request_ids or time.monotonic() > deadline:
                    break
        finally:
            consumer.close()
        if set(found) == request_ids:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for the events of {sorted(request_ids - set(found))}")


def no_traceback(gateway: Gateway) -> None:
    log = gateway.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


# 1. One large request stopped all publishing, for good.

def test_a_huge_request_is_answered_and_its_event_is_cut_to_fit(gateway: Gateway) -> None:
    before = metric(gateway, "llmwatch_gateway_events_truncated_total")
    big = chat(gateway, "a" * 1_000_000)
    parts = chat(gateway, [{}] * 150_000)
    small = chat(gateway, "still publishing?")
    assert (big.status_code, parts.status_code, small.status_code) == (200, 200, 200)
    ids = {response.headers["x-request-id"] for response in (big, parts, small)}
    events = published(gateway, gateway.settings.topics.inference, ids)
    limit = gateway.settings.max_event_bytes
    for response in (big, parts):
        value = events[response.headers["x-request-id"]]
        assert len(value) <= limit and json.loads(value)["truncated"] is True
        assert "characters truncated]" in json.loads(value)["messages"][0]["content"]
    assert json.loads(events[small.headers["x-request-id"]])["truncated"] is False
    assert metric(gateway, "llmwatch_gateway_events_truncated_total") - before == 2
    assert gateway.health()["events"]["kafka"] == "connected"


def test_a_record_kafka_refuses_is_set_aside_and_the_spool_moves_on(broker: EmbeddedBroker, topics: Topics,
                                                                   tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """What a gateway restart found on disk: a poison record between two good ones (spooled by an older gateway
    that did not bound its events). The spool empties, the good ones are published, the poison is kept aside."""
    metrics = GatewayMetrics()
    spool = Spool(tmp_path / "spool", max_bytes=64 * 2**20)
    redactor = Redactor.from_settings([], {})

    def record(request_id: str, text: str) -> Record:
        exchange = Exchange(request_id=request_id, endpoint="chat", started_at=datetime.now(UTC), model=BASE_MODEL,
                            adapter=None, requested_model=None, stream=False,
                            messages=[{"role": "user", "content": "Hi"}], response_text=text, latency_s=0.1)
        event = inference_event(exchange, redactor).model_copy(update={"response_text": text})  # not cut
        return Record(topics.inference, BASE_MODEL.encode(), event.model_dump_json().encode())

    good = [f"good-{uuid.uuid4().hex[:6]}-{n}" for n in range(2)]
    spool.append([record(good[0], "ok"), record("poison", "x" * 2_000_000), record(good[1], "ok")])

    async def scenario() -> None:
        sink = EventSink(bootstrap_servers=broker.bootstrap_servers, topics=topics, spool=spool, redactor=redactor,
                         metrics=metrics, publish_timeout=5, max_backoff=0.5, queue_max=100)
        await sink.start()
        for _ in range(300):
            if not spool.pending:
                break
            await asyncio.sleep(0.1)
        await sink.stop()

    with caplog.at_level(logging.ERROR, logger="serving.gateway.sink"):
        asyncio.run(scenario())
    assert spool.pending == 0, caplog.text
    assert metrics.registry.get_sample_value("llmwatch_gateway_events_refused_total",
                                             {"reason": "MessageSizeTooLargeError"}) == 1
    assert metrics.registry.get_sample_value("llmwatch_gateway_events_published_total",
                                             {"topic": topics.inference}) == 2
    (kept,) = (spool.directory / "refused.jsonl").read_text().splitlines()
    assert json.loads(json.loads(kept)["value"])["request_id"] == "poison"
    assert "set aside" in caplog.text
    spool.close()


# 2. Input that froze the whole gateway.

def test_text_that_made_redaction_backtrack_does_not_hold_other_clients(gateway: Gateway) -> None:
    """Small requests while space-less megabytes are being redacted take about as long as they do alone (they
    took 5 to 17 s while redaction backtracked on the event loop)."""

    def latencies(n: int) -> list[float]:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            assert chat(gateway).status_code == 200
            times.append(time.perf_counter() - started)
        return times

    alone = statistics.median(latencies(15))
    hostile = ["a" * 1_000_000, "a." * 500_000, "1 " * 500_000, "a@" * 500_000]
    answers: list[httpx.Response] = []

    def attack() -> None:  # until the hostile events are redacted and published
        for text in hostile:
            answers.append(chat(gateway, text))
        answers.append(send(gateway, "POST", "/v1/feedback", json={"request_id": "r", "correction": "a" * 100_000}))
        published(gateway, gateway.settings.topics.inference,
                  {answer.headers["x-request-id"] for answer in answers[:len(hostile)]})

    attacker = threading.Thread(target=attack)
    attacker.start()
    during: list[float] = []
    while attacker.is_alive() or len(during) < 15:
        during += latencies(1)
    attacker.join()
    assert [answer.status_code for answer in answers] == [200] * len(hostile) + [202]
    print(f"alone {alone:.4f} s, during {statistics.median(during):.4f} s ({len(during)} requests)")
    # Not a speed check: a frozen loop held every client 5 to 17 s; the one-second floor keeps a busy
    # machine's noise from failing the test.
    assert statistics.median(during) < max(5 * alone, 1.0), (alone, during)


# 3. Request ids a client could forge.

def test_a_clients_request_id_is_kept_apart_and_picks_no_route(gateway: Gateway) -> None:
    answers = [send(gateway, "POST", CHAT, headers={"X-Request-ID": "pick-5"}, json={
        "model": "support", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}) for _ in range(30)]
    ids = {answer.headers["x-request-id"] for answer in answers}
    assert len(ids) == 30 and "pick-5" not in ids
    assert {answer.headers["x-client-request-id"] for answer in answers} == {"pick-5"}
    assert {answer.json()["id"] for answer in answers} == ids
    assert {answer.json()["model"] for answer in answers} == {BASE_MODEL, "support-v4"}  # both arms, not one
    events = published(gateway, gateway.settings.topics.inference, set(list(ids)[:3]))
    assert {json.loads(value)["attributes"]["gateway.client_request_id"] for value in events.values()} == {"pick-5"}


def test_feedback_with_a_feedback_key_needs_the_token_of_its_answer(gateway: Gateway) -> None:
    answer, other = chat(gateway), chat(gateway)
    request_id, token = answer.headers["x-request-id"], answer.headers["x-feedback-token"]
    assert answer.json()["feedback_token"] == token and answer.json()["id"] == request_id

    def feedback(key: str, headers: dict[str, str] | None = None, **fields: Any) -> int:
        body = {"request_id": request_id, "thumbs": "down", "user_id": "anyone", **fields}
        return send(gateway, "POST", "/v1/feedback", key=key, json=body, headers=headers).status_code

    assert feedback(FEEDBACK_KEY) == 403
    assert feedback(FEEDBACK_KEY, feedback_token=other.headers["x-feedback-token"]) == 403
    assert feedback(FEEDBACK_KEY, request_id=other.headers["x-request-id"], feedback_token=token) == 403
    assert feedback(FEEDBACK_KEY, feedback_token=token) == 202
    assert feedback(FEEDBACK_KEY, headers={"X-Feedback-Token": token}) == 202
    assert feedback(CLIENT_KEY) == 202  # the app's back end: trusted, like the SDK's producers
    assert feedback(CLIENT_KEY, feedback_token="0" * 32) == 403

    with httpx.stream("POST", f"{gateway.url}{CHAT}", headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=60,
                      json={"model": BASE_MODEL, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
                      ) as stream:
        chunks = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")]
        assert chunks[0]["feedback_token"] == stream.headers["x-feedback-token"]
        assert {chunk["id"] for chunk in chunks} == {stream.headers["x-request-id"]}
        assert all("feedback_token" not in chunk for chunk in chunks[1:])


# 4. Metrics an app could blow up.

def test_client_model_names_never_become_metric_labels(gateway: Gateway) -> None:
    before = len(gateway.metrics())
    for n in range(150):
        chat(gateway, model=f"\x01evil-{n}-" + "x" * 1000)
    for n in range(100):
        chat(gateway, model=f"plain-{n}")
    text = gateway.metrics()
    assert "evil" not in text and "\x01" not in text and "xxxxxxxxxx" not in text
    assert len(text) - before < 40_000
    assert metric(gateway, "llmwatch_gateway_requests_total", adapter="unknown") >= 150 + 100 - 64


# 5. Personal data past redaction.

def test_personal_data_in_user_metadata_and_feedback_is_redacted(gateway: Gateway) -> None:
    answer = chat(gateway, "my card is 4111.1111.1111.1111, ISBN 978-3-16-148410-0", user="ann@example.com",
                  metadata={"note": "call +1 415 555 2671 ext. 12", "gateway.route": "forged"})
    request_id = answer.headers["x-request-id"]
    feedback = gateway.request("POST", "/v1/feedback", key=CLIENT_KEY, json={
        "request_id": request_id, "thumbs": "up", "user_id": "bob＠example.com", "comment": "ann@例子.广告"})
    assert feedback.status_code == 202
    (value,) = published(gateway, gateway.settings.topics.inference, {request_id}).values()
    event = json.loads(value)
    assert event["messages"][0]["content"] == "my card is [CARD], ISBN 978-3-16-148410-0"
    assert (event["user_id"], event["attributes"]["note"]) == ("[EMAIL]", "call [PHONE]")
    assert "gateway.route" not in event["attributes"]
    (value,) = published(gateway, gateway.settings.topics.feedback, {request_id}).values()
    assert (json.loads(value)["user_id"], json.loads(value)["comment"]) == ("[EMAIL]", "[EMAIL]")


# 6. No size limits.

def raw_http(gateway: Gateway, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.settings.serving.port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the gateway may close before it has read it all: its answer counts
            sock.sendall(head + body)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        return answer


def rss_kib(gateway: Gateway) -> int:
    assert gateway.process is not None
    status = Path(f"/proc/{gateway.process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]


def test_large_bodies_and_heads_are_refused_before_they_are_read(gateway: Gateway) -> None:
    port = gateway.settings.serving.port
    start = f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
    declared = raw_http(gateway, f"{start}Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n".encode())
    assert declared.startswith(b"HTTP/1.1 413") and b"MAX_BODY_BYTES" in declared

    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(80):
            yield b"a" * 65536
        yield b'"}]}'

    chunked = httpx.post(f"{gateway.url}{CHAT}", content=chunks(), timeout=60,
                         headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"})
    assert chunked.status_code == 413

    before = rss_kib(gateway)
    huge = raw_http(gateway, f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {'a' * 30_000_000}"
                             "\r\n\r\n".encode())
    assert huge.startswith(b"HTTP/1.1 431") and b"MAX_HEADER_BYTES" in huge
    assert rss_kib(gateway) - before < 20_000
    many = "".join(f"X-H-{n}: v\r\n" for n in range(30_000))
    answer = raw_http(gateway, f"GET /v1/models HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 431") and b"MAX_HEADER" in answer
    assert chat(gateway).status_code == 200


# 7 and 8. 500s with long tracebacks, and the small ones.

@pytest.mark.parametrize(("path", "key", "body", "status", "named"), [
    (CHAT, CLIENT_KEY, b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "messages[0].content"),
    (CHAT, CLIENT_KEY, b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested too deep"),
    (CHAT, CLIENT_KEY, b'{"messages": [], "stream": "true"}', 400, "stream must be true or false"),
    (CHAT, CLIENT_KEY, b'{"messages": [], "max_tokens": -3}', 400, "max_tokens"),
    (CHAT, CLIENT_KEY, b'{"messages": [], "max_tokens": NaN}', 400, "NaN"),
    ("/v1/feedback", CLIENT_KEY, b'{"request_id": "r", "score": NaN}', 422, "score"),
    ("/v1/feedback", CLIENT_KEY, b'{"request_id": "r", "score": Infinity}', 422, "score"),
    ("/v1/feedback", CLIENT_KEY, b'{"request_id": "r", "comment": "\\ud800"}', 422, "JSON"),
    ("/v1/feedback", CLIENT_KEY, b'{"request_id": "r", "thumbs": ' + b"[" * 5000 + b"]" * 5000 + b"}", 422, ""),
    ("/admin/routes/canary", ADMIN_KEY, b'{"targets": {"smollm2-135m": NaN}}', 422, "finite"),
    ("/admin/routes/canary", ADMIN_KEY, b'{"targets": {"smollm2-135m": 1, "b": Infinity}}', 422, "finite"),
    ("/admin/routes/bad%20name", ADMIN_KEY, b'{"targets": {"smollm2-135m": 1}}', 422, "plain identifier"),
    (f"/admin/routes/{BASE_MODEL}", ADMIN_KEY, b'{"targets": {"support-v4": 1}}', 409, "shadow_base_model"),
])
def test_hostile_bodies_get_a_4xx_that_names_the_field_and_no_traceback(
        gateway: Gateway, path: str, key: str, body: bytes, status: int, named: str) -> None:
    method = "PUT" if path.startswith("/admin") else "POST"
    response = send(gateway, method, path, key=key, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert named in response.json()["error"]["message"]
    no_traceback(gateway)


def test_a_large_invalid_field_is_not_echoed_back(gateway: Gateway) -> None:
    response = gateway.request("POST", "/v1/feedback", key=CLIENT_KEY,
                               json={"request_id": "r", "correction": "z" * 3_000_000})
    assert response.status_code == 422 and "correction" in response.json()["error"]["message"]
    assert len(response.content) < 2000


def test_the_answer_id_is_the_request_id_whatever_the_upstream_writes(gateway: Gateway) -> None:
    """The canned upstream writes `"id": "chatcmpl-..."`, with a space, as Python's json does."""
    answer = chat(gateway)
    assert answer.json()["id"] == answer.headers["x-request-id"]


@dataclass
class OffLoopbackGateway(HostileGateway):
    """A gateway on 127.0.0.2: loopback to the kernel, beyond it to the gateway, whose ops endpoints then
    need a key."""

    @property
    def url(self) -> str:
        return f"http://{self.settings.serving.host}:{self.settings.serving.port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=5).status_code in (200, 401)
        except httpx.HTTPError:
            return False


def test_operations_endpoints_need_a_key_beyond_loopback(broker: EmbeddedBroker, topics: Topics, upstream: str,
                                                         tmp_path: Path) -> None:
    settings = gateway_settings(broker, topics, tmp_path, upstream, host="127.0.0.2")
    gateway = OffLoopbackGateway(settings, tmp_path / "gateway.log").start()
    try:
        for path in ("/metrics", "/health", "/docs", "/openapi.json"):
            assert gateway.request("GET", path, key=None).status_code == 401, path
            assert gateway.request("GET", path, key=FEEDBACK_KEY).status_code == 401, path
            assert gateway.request("GET", path, key=ADMIN_KEY).status_code == 200, path
            assert gateway.request("GET", path, key=CLIENT_KEY).status_code == 200, path
    finally:
        gateway.stop()

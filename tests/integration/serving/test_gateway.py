"""The gateway in front of the real vLLM, publishing to the real broker, stored by a real worker.

Every request goes through the official `openai` client, as an app would send it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from kafka import KafkaConsumer

from serving.gateway.routing import choose
from serving.vllm.launcher import VllmServer
from tests.integration.conftest import Worker, wait_until
from tests.integration.serving.conftest import (
    ADMIN_KEY,
    BASE_MODEL,
    CLIENT_KEY,
    FEEDBACK_KEY,
    Gateway,
    rows,
)

pytestmark = pytest.mark.integration

METADATA = {"user_id": "u-17", "session_id": "s-9", "cohort": "pro", "language": "en",
            "prompt_template": "support-chat", "prompt_template_version": "v2", "channel": "web"}


@pytest.fixture(scope="module")
def gateway(make_gateway: Callable[..., Gateway], worker: Worker) -> Gateway:
    return make_gateway(worker.settings).start()


def stored(worker: Worker, request_id: str, count: int = 1) -> list[dict[str, Any]]:
    wait_until(lambda: worker.count(f"SELECT count() FROM inference_events WHERE request_id = '{request_id}'")
               >= count, 60, f"the inference event of {request_id}")
    return rows(worker, f"SELECT * FROM inference_events WHERE request_id = '{request_id}'")


def kafka_messages(worker: Worker, topic: str) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=worker.settings.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000)
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_a_chat_completion_is_answered_and_becomes_an_event(gateway: Gateway, worker: Worker) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=BASE_MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12, temperature=0, metadata=METADATA)
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]
    assert completion.id == request_id
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    timing = dict(part.strip().split(";dur=") for part in raw.headers["server-timing"].split(","))
    assert set(timing) == {"upstream", "gateway"} and float(timing["upstream"]) > float(timing["gateway"]) > 0

    (row,) = stored(worker, request_id)
    assert (row["model"], row["adapter"], row["status"], row["error"]) == (BASE_MODEL, None, "ok", None)
    assert json.loads(row["messages"]) == [{"role": "user", "content": "What is the capital of France?"}]
    assert row["response_text"] == completion.choices[0].message.content
    assert (row["prompt_tokens"], row["completion_tokens"]) == (completion.usage.prompt_tokens,
                                                                completion.usage.completion_tokens)
    assert row["latency_ms"] > 0 and 0 < row["ttft_ms"] <= row["latency_ms"]
    assert row["tokens_per_second"] > 0
    assert {key: row[key] for key in METADATA if key != "channel"} == {k: v for k, v in METADATA.items()
                                                                       if k != "channel"}
    assert row["attributes"]["channel"] == "web"

    published = [m for m in kafka_messages(worker, worker.settings.topics.inference)
                 if json.loads(m.value)["request_id"] == request_id]
    assert [m.key for m in published] == [BASE_MODEL.encode()]


def test_a_streamed_chat_completion_is_passed_through_and_counted(gateway: Gateway, worker: Worker) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=BASE_MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=16, stream=True)
    request_id = raw.headers["x-request-id"]
    chunks = list(raw.parse())
    assert {chunk.id for chunk in chunks} == {request_id}
    assert all(chunk.usage is None for chunk in chunks), "usage was sent though the client did not ask for it"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text

    (row,) = stored(worker, request_id)
    assert row["response_text"] == text
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert 0 < row["ttft_ms"] < row["latency_ms"]
    assert row["attributes"]["gateway.stream"] == "true"


def test_a_stream_that_asks_for_usage_gets_it(gateway: Gateway, worker: Worker) -> None:
    chunks = list(gateway.client().chat.completions.create(
        model=BASE_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=6, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    (row,) = stored(worker, chunks[-1].id)
    assert row["completion_tokens"] == chunks[-1].usage.completion_tokens


def test_completions_and_models(gateway: Gateway, worker: Worker) -> None:
    client = gateway.client()
    assert BASE_MODEL in {model.id for model in client.models.list()}
    completion = client.completions.create(model=BASE_MODEL, prompt="The sky is", max_tokens=5)
    streamed = list(client.completions.create(model=BASE_MODEL, prompt="Grass is", max_tokens=5, stream=True))

    (row,) = stored(worker, completion.id)
    assert (row["prompt"], row["messages"], row["response_text"]) == ("The sky is", None, completion.choices[0].text)
    (row,) = stored(worker, streamed[0].id)
    assert row["prompt"] == "Grass is" and row["completion_tokens"] > 0


def test_feedback_round_trips_even_before_its_request_is_known(gateway: Gateway, worker: Worker) -> None:
    answer = gateway.client().chat.completions.create(
        model=BASE_MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=5)
    token = (answer.model_extra or {})["feedback_token"]
    accepted = gateway.request("POST", "/v1/feedback", key=FEEDBACK_KEY, json={
        "request_id": answer.id, "thumbs": "down", "comment": "too short", "correction": "Blue.",
        "feedback_token": token})
    assert accepted.status_code == 202, accepted.text
    early = gateway.request("POST", "/v1/feedback", key=CLIENT_KEY,  # an app's back end needs no token
                            json={"request_id": "not-seen-yet-42", "score": 0.8})
    assert early.status_code == 202, early.text

    wait_until(lambda: worker.count("SELECT count() FROM feedback_events WHERE request_id IN "
                                    f"('{answer.id}', 'not-seen-yet-42')") == 2, 60, "two feedback rows")
    (row,) = rows(worker, f"SELECT * FROM feedback_events WHERE request_id = '{answer.id}'")
    assert (row["thumbs"], row["comment"], row["correction"]) == ("down", "too short", "Blue.")
    (row,) = rows(worker, "SELECT * FROM feedback_events WHERE request_id = 'not-seen-yet-42'")
    assert row["score"] == 0.8


@pytest.mark.parametrize(("body", "named"), [
    ({"request_id": "r1", "thumbs": "sideways"}, "thumbs"),
    ({"request_id": "r1", "score": 7}, "score"),
    ({"request_id": "r1"}, "at least one of thumbs, score, comment or correction"),
    ({"thumbs": "up"}, "request_id"),
    ({"request_id": "r1", "thumb": "up"}, "thumb"),
])
def test_invalid_feedback_gets_a_422_that_says_what_is_wrong(gateway: Gateway, body: dict[str, Any],
                                                            named: str) -> None:
    response = gateway.request("POST", "/v1/feedback", key=FEEDBACK_KEY, json=body)
    assert response.status_code == 422
    assert named in response.json()["error"]["message"]


def test_not_json_feedback_gets_a_422(gateway: Gateway) -> None:
    response = gateway.request("POST", "/v1/feedback", key=FEEDBACK_KEY, content=b"thumbs up!")
    assert response.status_code == 422 and "JSON" in response.json()["error"]["message"]


def test_personal_data_is_redacted_before_the_event_leaves(gateway: Gateway, worker: Worker) -> None:
    prompt = "Repeat after me: my e-mail is jane.doe@example.com and my card is 4111 1111 1111 1111."
    answer = gateway.client().chat.completions.create(
        model=BASE_MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=40, temperature=0)

    (row,) = stored(worker, answer.id)
    stored_prompt = json.loads(row["messages"])[0]["content"]
    assert stored_prompt == "Repeat after me: my e-mail is [EMAIL] and my card is [CARD]."
    assert row["redacted"] is True
    assert row["redactions"]["email"] >= 1 and row["redactions"]["credit_card"] >= 1
    for message in kafka_messages(worker, worker.settings.topics.inference):
        assert b"jane.doe@example.com" not in message.value and b"4111 1111 1111 1111" not in message.value


def test_a_wrong_or_missing_key_is_refused_and_never_logged(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        gateway.client("sk-wrong-key-9999").chat.completions.create(
            model=BASE_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert gateway.request("GET", "/v1/models", key=None).status_code == 401
    assert gateway.request("POST", "/v1/chat/completions", key=FEEDBACK_KEY,
                           json={"messages": [{"role": "user", "content": "Hi"}]}).status_code == 401
    assert gateway.request("GET", "/admin/routes", key=CLIENT_KEY).status_code == 401
    assert gateway.request("POST", "/v1/feedback", key="fk-wrong", json={"request_id": "r", "score": 1}
                           ).status_code == 401
    log = gateway.log_path.read_text()
    for key in (CLIENT_KEY, FEEDBACK_KEY, ADMIN_KEY, "sk-wrong-key-9999"):
        assert key not in log
        assert key not in gateway.metrics()


def test_a_request_vllm_refuses_is_an_error_event(gateway: Gateway, worker: Worker) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        gateway.client().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    request_id = refused.value.response.headers["x-request-id"]
    (row,) = stored(worker, request_id)
    assert row["status"] == "error" and "404" in row["error"] and "no-such-model" in row["error"]


def test_an_unreachable_vllm_is_a_502_and_an_error_event(make_gateway: Callable[..., Gateway],
                                                         worker: Worker) -> None:
    from tests.integration.conftest import free_port

    dead = make_gateway(worker.settings, vllm_url=f"http://127.0.0.1:{free_port()}").start()
    response = dead.request("POST", "/v1/chat/completions", json={
        "model": BASE_MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 502 and "unavailable" in response.json()["error"]["message"]
    (row,) = stored(worker, response.headers["x-request-id"])
    assert row["status"] == "error" and "unreachable" in row["error"]
    assert dead.health()["vllm"] == "unreachable"
    dead.stop()


def test_a_client_that_goes_away_mid_stream_is_a_cancelled_event(gateway: Gateway, worker: Worker) -> None:
    body = {"model": BASE_MODEL, "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 400, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as response:
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break
    (row,) = stored(worker, request_id)
    assert row["status"] == "cancelled"
    assert row["completion_tokens"] is None or row["completion_tokens"] < 400


def test_routes_split_traffic_between_base_model_and_adapter(gateway: Gateway, worker: Worker, vllm: VllmServer,
                                                             tiny_adapter: Path) -> None:
    loaded = httpx.post(f"{vllm.url}/v1/load_lora_adapter", timeout=60,
                        json={"lora_name": "tiny-lora", "lora_path": str(tiny_adapter)})
    assert loaded.status_code == 200, loaded.text
    weights = {BASE_MODEL: 50, "tiny-lora": 50}

    assert gateway.request("PUT", "/admin/routes/support", key=CLIENT_KEY, json={"targets": weights}
                           ).status_code == 401
    missing = gateway.request("PUT", "/admin/routes/support", key=ADMIN_KEY,
                              json={"targets": {"not-loaded": 1}})
    assert missing.status_code == 409 and "not-loaded" in missing.json()["error"]["message"]
    put = gateway.request("PUT", "/admin/routes/support", key=ADMIN_KEY, json={"targets": weights})
    assert put.status_code == 200, put.text
    assert gateway.request("GET", "/admin/routes", key=ADMIN_KEY).json()["routes"] == {"support": weights}
    assert "support" in {model.id for model in gateway.client().models.list()}

    # The gateway mints every request id, and the choice hashes it: a client's X-Request-ID picks nothing.
    ids = [gateway.client().chat.completions.create(
        model="support", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
        extra_headers={"X-Request-ID": "pick-5"}).id for _ in range(20)]
    assert len(set(ids)) == 20
    targets = set()
    for request_id in ids:
        (row,) = stored(worker, request_id)
        target = choose(weights, request_id)
        targets.add(target)
        assert (row["model"], row["adapter"]) == (BASE_MODEL, None if target == BASE_MODEL else "tiny-lora")
        assert row["attributes"]["gateway.route"] == "support"
        assert row["attributes"]["gateway.client_request_id"] == "pick-5"
    assert targets == set(weights)

    assert gateway.request("DELETE", "/admin/routes/support", key=ADMIN_KEY).status_code == 200
    assert gateway.request("DELETE", "/admin/routes/support", key=ADMIN_KEY).status_code == 404


def test_metrics_show_requests_latency_ttft_and_the_spool(gateway: Gateway) -> None:
    gateway.client().chat.completions.create(model=BASE_MODEL, messages=[{"role": "user", "content": "Hi"}],
                                             max_tokens=2)
    text = gateway.metrics()
    for name in ('llmwatch_gateway_requests_total{adapter="",endpoint="chat",model="smollm2-135m",status="ok"}',
                 'llmwatch_gateway_request_seconds_bucket', 'llmwatch_gateway_ttft_seconds_bucket',
                 'llmwatch_gateway_overhead_seconds_bucket', 'llmwatch_gateway_spool_events 0.0',
                 'llmwatch_gateway_events_published_total', 'llmwatch_gateway_publish_errors_total',
                 'llmwatch_gateway_kafka_connected 1.0'):
        assert name in text, name

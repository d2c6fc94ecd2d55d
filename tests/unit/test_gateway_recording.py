"""From an exchange to its event: app attributes, redaction, timings, and robustness to odd requests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from schemas.events import FeedbackEvent
from schemas.topics import Topics, destination
from serving.gateway.auth import KeyRing, presented_key
from serving.gateway.recording import Exchange, inference_event, redacted_feedback
from serving.gateway.redaction import BUILTIN_KINDS, Redactor
from streams.settings import Settings

REDACTOR = Redactor.from_settings(BUILTIN_KINDS, {})
STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def exchange(**changes: object) -> Exchange:
    base = Exchange(request_id="r1", endpoint="chat", started_at=STARTED, model="smollm2-135m", adapter=None,
                    requested_model="smollm2-135m", stream=False,
                    messages=[{"role": "user", "content": "Hi"}], response_text="Hello!", prompt_tokens=9,
                    completion_tokens=4, latency_s=0.5, ttft_s=0.1)
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def test_timings_tokens_and_rate() -> None:
    event = inference_event(exchange(), REDACTOR)
    assert (event.latency_ms, event.ttft_ms, event.tokens_per_second) == (500.0, 100.0, 8.0)
    assert (event.prompt_tokens, event.completion_tokens, event.timestamp) == (9, 4, STARTED)
    assert event.attributes == {"gateway.endpoint": "chat", "gateway.stream": "false"}


def test_a_non_streamed_answer_is_read_for_text_and_usage_when_the_event_is_built() -> None:
    answer = (b'{"id":"r1","choices":[{"index":0,"message":{"role":"assistant","content":"Mail ann@example.com"}}],'
              b'"usage":{"prompt_tokens":12,"completion_tokens":5}}')
    raw = exchange(response_text=None, prompt_tokens=None, completion_tokens=None, answer=answer)
    event = inference_event(raw, REDACTOR)
    assert (event.response_text, event.prompt_tokens, event.completion_tokens) == ("Mail [EMAIL]", 12, 5)
    assert (event.status, event.tokens_per_second) == ("ok", 10.0)
    assert raw.answer == answer and raw.response_text is None  # building the event changes nothing


def test_an_answer_that_is_not_a_json_object_is_an_error_event() -> None:
    event = inference_event(exchange(response_text=None, answer=b'{"choices": [trunc'), REDACTOR)
    assert event.status == "error" and event.error is not None and "not a JSON object" in event.error


def test_metadata_fills_the_named_fields_and_the_rest_are_attributes() -> None:
    metadata = {"user_id": "u-7", "session_id": "s-1", "cohort": "pro", "language": "de", "prompt_template": "faq",
                "prompt_template_version": 3, "channel": "web", "ab": {"arm": "b"}}
    event = inference_event(exchange(metadata=metadata, user="ignored-when-metadata-has-one"), REDACTOR)
    assert (event.user_id, event.session_id, event.cohort, event.language) == ("u-7", "s-1", "pro", "de")
    assert (event.prompt_template, event.prompt_template_version) == ("faq", "3")
    assert event.attributes["channel"] == "web" and event.attributes["ab"] == '{"arm": "b"}'
    assert inference_event(exchange(user="u-9"), REDACTOR).user_id == "u-9"


def test_prompts_and_responses_are_redacted_and_counted() -> None:
    event = inference_event(exchange(messages=[{"role": "user", "content": "I am ann@example.com"}],
                                     response_text="Hi ann@example.com, call +1 415 555 2671"), REDACTOR)
    assert event.messages is not None and event.messages[0].content == "I am [EMAIL]"
    assert event.response_text == "Hi [EMAIL], call [PHONE]"
    assert (event.redacted, event.redactions) == (True, {"email": 2, "phone": 1})
    assert not inference_event(exchange(), REDACTOR).redacted


def test_a_route_name_is_kept_when_it_differs_from_the_model_used() -> None:
    event = inference_event(exchange(requested_model="support", adapter="support-v4"), REDACTOR)
    assert (event.model, event.adapter, event.attributes["gateway.route"]) == ("smollm2-135m", "support-v4", "support")
    assert destination(event, Topics()) == ("llm.inference", b"smollm2-135m:support-v4")


@pytest.mark.parametrize(("messages", "prompt", "expected_messages", "expected_prompt"), [
    ([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}], None,
     [("user", "a\n[image_url]")], None),
    ([{"role": "assistant", "content": None}, {"content": "x"}], None, [("assistant", ""), ("unknown", "x")], None),
    (None, ["one", "two"], None, "one\ntwo"),
    (None, [1, 2, 3], None, "[1, 2, 3]"),
    ("not a list", None, None, ""),
])
def test_odd_request_shapes_still_make_a_valid_event(messages: object, prompt: object,
                                                     expected_messages: list[tuple[str, str]] | None,
                                                     expected_prompt: str | None) -> None:
    event = inference_event(exchange(messages=messages, prompt=prompt, status="error", error="bad request"), REDACTOR)
    assert [(m.role, m.content) for m in event.messages or []] == (expected_messages or [])
    assert event.prompt == expected_prompt


def test_overlong_names_are_cut_rather_than_losing_the_event() -> None:
    event = inference_event(exchange(metadata={"cohort": "c" * 1000}, adapter="a" * 300), REDACTOR)
    assert len(event.cohort or "") == 256 and len(event.adapter or "") == 256


def test_feedback_text_is_redacted_too() -> None:
    event = FeedbackEvent(request_id="r1", comment="mail me at ann@example.com", correction="Call 415-555-2671")
    cleaned = redacted_feedback(event, REDACTOR)
    assert (cleaned.comment, cleaned.correction) == ("mail me at [EMAIL]", "Call [PHONE]")
    assert cleaned.event_id == event.event_id


def test_keys_per_scope() -> None:
    keys = KeyRing([SecretStr("client")], [SecretStr("feedback")], [SecretStr("admin")])
    assert keys.refusal("client", "client") is None
    assert keys.refusal("client", "feedback") == "wrong API key"
    assert keys.refusal("feedback", "feedback") is None and keys.refusal("feedback", "client") is None
    assert keys.refusal("admin", "client") == "wrong API key"
    assert "missing" in (keys.refusal("client", None) or "")


def test_without_client_keys_all_is_open_and_admin_needs_its_key_once_clients_have_one() -> None:
    assert KeyRing([], [], []).refusal("admin", None) is None
    assert "ADMIN_API_KEYS" in (KeyRing([SecretStr("c")], [], []).refusal("admin", "c") or "")


def test_keys_come_from_the_bearer_header_or_x_api_key() -> None:
    assert presented_key({"authorization": "Bearer abc"}) == "abc"
    assert presented_key({"x-api-key": "xyz"}) == "xyz"
    assert presented_key({"authorization": "Basic abc"}) is None


def test_keys_and_routes_come_from_the_environment_and_secrets_stay_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMWATCH_SERVING__API_KEYS", '["sk-1", "sk-2"]')
    monkeypatch.setenv("LLMWATCH_SERVING__ROUTES", '{"support": {"smollm2-135m": 90, "support-v4": 10}}')
    settings = Settings(_env_file=None)
    assert [key.get_secret_value() for key in settings.serving.api_keys] == ["sk-1", "sk-2"]
    assert settings.serving.routes == {"support": {"smollm2-135m": 90.0, "support-v4": 10.0}}
    assert "sk-1" not in repr(settings) and "sk-1" not in settings.model_dump_json()

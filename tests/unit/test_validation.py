import pytest

from llmwatch.traffic import inference_event
from processors.validation import Limits, RawRecord, dead_letter, decode
from schemas import DeadLetterEvent, FeedbackEvent, InferenceEvent

LIMITS = Limits(max_event_bytes=10_000, dead_letter_raw_bytes=16)


BAD_INPUT = [
    ("not_json", b"this is not json {"),
    ("invalid_utf8", b'{"request_id": "\xff\xfe", "model": "m"}'),
    ("invalid_fields", b'{"request_id": "r-missing-model", "prompt": "hi"}'),
    ("invalid_fields", b'{"request_id": "r", "model": "m", "prompt": "hi", "latency_ms": "fast"}'),
    ("unknown_schema_version",
     b'{"schema_version": 99, "request_id": "r", "model": "m", "prompt": "hi", "latency_ms": 1}'),
    ("not_an_object", b'["an", "array"]'),
    ("empty", b""),
]
"""Each kind of bad input and the reason the worker must give, written here rather than taken from the product."""


def record(value: bytes | None, offset: int = 7) -> RawRecord:
    return RawRecord(topic="llm.inference", partition=2, offset=offset, value=value)


@pytest.mark.parametrize(("reason", "payload"), BAD_INPUT)
def test_each_kind_of_bad_input_is_a_dead_letter_with_its_reason(reason: str, payload: bytes) -> None:
    result = decode(record(payload), InferenceEvent, LIMITS)
    assert isinstance(result, DeadLetterEvent)
    assert result.reason == reason
    assert (result.origin_topic, result.origin_partition, result.origin_offset) == ("llm.inference", 2, 7)
    assert result.detail


def test_oversized_messages_are_refused_before_parsing() -> None:
    result = decode(record(b"{" + b" " * 20_000 + b"}"), InferenceEvent, LIMITS)
    assert isinstance(result, DeadLetterEvent)
    assert result.reason == "too_large"
    assert "LLMWATCH_MAX_EVENT_BYTES" in result.detail


def test_raw_bytes_are_kept_up_to_the_prefix_limit() -> None:
    result = dead_letter(record(b"x" * 40), "not_json", "why", LIMITS)
    assert result.raw == b"x" * 16
    assert result.raw_size == 40
    assert result.truncated


def test_dead_letter_id_is_the_same_for_a_replay_and_new_for_another_message_at_that_offset() -> None:
    assert dead_letter(record(b"a"), "not_json", "x", LIMITS).event_id == \
        dead_letter(record(b"a"), "not_json", "x", LIMITS).event_id
    assert dead_letter(record(b"a", 7), "not_json", "x", LIMITS).event_id != \
        dead_letter(record(b"a", 8), "not_json", "x", LIMITS).event_id
    # an embedded broker restarts at offset 0: a new message there must not replace the old dead letter
    assert dead_letter(record(b"a"), "not_json", "x", LIMITS).event_id != \
        dead_letter(record(b"b"), "not_json", "x", LIMITS).event_id
    assert dead_letter(RawRecord("t", 0, 0, b"a", 1000), "not_json", "x", LIMITS).event_id != \
        dead_letter(RawRecord("t", 0, 0, b"a", 2000), "not_json", "x", LIMITS).event_id


def test_invalid_fields_name_every_field_at_fault() -> None:
    result = decode(record(b'{"request_id": "r", "latency_ms": "slow", "prompt": "p"}'), InferenceEvent, LIMITS)
    assert isinstance(result, DeadLetterEvent)
    assert result.reason == "invalid_fields"
    assert "model" in result.detail and "latency_ms" in result.detail


def test_valid_events_decode_to_their_model() -> None:
    import random

    event = inference_event(random.Random(1))
    assert decode(record(event.model_dump_json().encode()), InferenceEvent, LIMITS) == event


def test_an_inference_event_on_the_feedback_topic_is_not_feedback() -> None:
    import random

    payload = inference_event(random.Random(2)).model_dump_json().encode()
    result = decode(record(payload), FeedbackEvent, LIMITS)
    assert isinstance(result, DeadLetterEvent)
    assert result.reason == "invalid_fields"

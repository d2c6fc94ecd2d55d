from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from schemas import EVENT_KINDS, DeadLetterEvent, FeedbackEvent, InferenceEvent, MetricPoint


def inference(**overrides: object) -> InferenceEvent:
    fields: dict[str, object] = {"request_id": "r1", "model": "m", "prompt": "hi", "latency_ms": 12.5}
    return InferenceEvent.model_validate(fields | overrides)


def test_timestamps_are_converted_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    event = inference(timestamp=datetime(2026, 1, 1, 13, 0, tzinfo=cet))
    assert event.timestamp == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert event.timestamp.utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        inference(timestamp=datetime(2026, 1, 1, 12, 0))  # noqa: DTZ001


def test_unknown_schema_version_is_refused_with_advice() -> None:
    with pytest.raises(ValidationError, match="upgrade llmwatch"):
        inference(schema_version=2)


def test_inference_needs_a_prompt_or_messages() -> None:
    with pytest.raises(ValidationError, match="prompt"):
        InferenceEvent(request_id="r", model="m", latency_ms=1)
    messages = inference(prompt=None, messages=[{"role": "user", "content": "hi"}]).messages
    assert messages is not None and messages[0].content == "hi"


def test_token_counts_must_fit_their_column() -> None:
    with pytest.raises(ValidationError, match="prompt_tokens"):
        inference(prompt_tokens=2**32)


def test_feedback_must_say_something() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        FeedbackEvent(request_id="r")
    with pytest.raises(ValidationError, match="score"):
        FeedbackEvent(request_id="r", score=1.5)
    assert FeedbackEvent(request_id="r", thumbs="down").thumbs == "down"


def test_unknown_fields_are_ignored_for_rolling_upgrades() -> None:
    event = InferenceEvent.model_validate_json(inference().model_dump_json()[:-1] + ', "new_field": 1}')
    assert not hasattr(event, "new_field")


def test_events_get_distinct_ids_and_round_trip_through_json() -> None:
    first, second = inference(), inference()
    assert first.event_id != second.event_id
    assert InferenceEvent.model_validate_json(first.model_dump_json()) == first


def test_dead_letter_raw_bytes_survive_json() -> None:
    letter = DeadLetterEvent(origin_topic="t", origin_partition=1, origin_offset=2, reason="invalid_utf8",
                             detail="x", raw=b"\xff\x00", raw_size=2, truncated=False)
    assert DeadLetterEvent.model_validate_json(letter.model_dump_json()).raw == b"\xff\x00"


def test_every_kind_has_its_own_table() -> None:
    tables = [model.table for model in EVENT_KINDS.values()]
    assert len(set(tables)) == len(tables) == 10
    assert MetricPoint.age_column == "window_start"

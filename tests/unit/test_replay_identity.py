"""What a replay must not change: ids and times derived from the record, and times the store can hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processors.validation import Limits, RawRecord, decode
from schemas import DeadLetterEvent, FeedbackEvent, InferenceEvent, MetricPoint

LIMITS = Limits(max_event_bytes=10_000, dead_letter_raw_bytes=64,
                retention_days={"events": 90, "metrics": 365, "dead_letters": 30})
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
NO_ID = b'{"request_id": "r-1", "model": "m", "prompt": "hi", "latency_ms": 12.5}'


def record(value: bytes | None, offset: int = 3, timestamp_ms: int | None = 1_796_000_000_000) -> RawRecord:
    return RawRecord("llm.inference", 1, offset, value, timestamp_ms)


def decoded(value: bytes | None, **where: int | None) -> InferenceEvent | DeadLetterEvent:
    return decode(record(value, **where), InferenceEvent, LIMITS, NOW)  # type: ignore[arg-type]


def test_an_event_without_id_gets_the_same_id_each_time_its_record_is_read() -> None:
    first, again = decoded(NO_ID), decoded(NO_ID)
    assert isinstance(first, InferenceEvent) and isinstance(again, InferenceEvent)
    assert first.event_id == again.event_id
    assert first.timestamp == again.timestamp == datetime.fromtimestamp(1_796_000_000, tz=UTC)


@pytest.mark.parametrize("other", [
    {"offset": 4},  # the next message
    {"timestamp_ms": 1_796_000_000_001},  # a new message at a reused offset (embedded broker restarted)
])
def test_another_record_gets_another_id(other: dict[str, int]) -> None:
    assert decoded(NO_ID).event_id != decoded(NO_ID, **other).event_id


def test_other_bytes_at_the_same_place_get_another_id() -> None:
    assert decoded(NO_ID).event_id != decoded(NO_ID.replace(b"r-1", b"r-2")).event_id


def test_an_id_and_a_time_the_producer_sent_are_kept() -> None:
    event = InferenceEvent(request_id="r", model="m", prompt="p", latency_ms=1.0, timestamp=NOW - timedelta(hours=1))
    result = decoded(event.model_dump_json().encode())
    assert isinstance(result, InferenceEvent)
    assert (result.event_id, result.timestamp) == (event.event_id, event.timestamp)


def test_without_a_kafka_timestamp_the_event_time_is_ingest_time() -> None:
    result = decode(record(NO_ID, timestamp_ms=None), InferenceEvent, LIMITS)
    assert isinstance(result, InferenceEvent)
    assert abs(result.timestamp - datetime.now(UTC)) < timedelta(minutes=5)


@pytest.mark.parametrize(("payload", "reason"), [
    (None, "empty"),  # a tombstone
    (b"null", "not_an_object"),
    (b'"\\ud800"', "not_json"),  # a lone surrogate, escaped
    (b'{"request_id": "\\ud800", "model": "m", "prompt": "p", "latency_ms": 1}', "not_json"),
    ('{"request_id": "\ud800", "model": "m"}'.encode("utf-8", "surrogatepass"), "invalid_utf8"),  # raw
])
def test_nulls_tombstones_and_surrogates_are_dead_letters(payload: bytes | None, reason: str) -> None:
    result = decoded(payload)
    assert isinstance(result, DeadLetterEvent)
    assert result.reason == reason


@pytest.mark.parametrize(("field", "when"), [
    ("timestamp", "1899-12-31T23:59:59Z"),
    ("timestamp", "2300-01-01T00:00:00Z"),
    ("completed_at", "9999-01-01T00:00:00Z"),
    ("timestamp", "0001-01-01T00:00:00Z"),
])
def test_times_clickhouse_cannot_hold_are_dead_letters(field: str, when: str) -> None:
    payload = NO_ID[:-1] + f', "{field}": "{when}"}}'.encode()
    result = decoded(payload)
    assert isinstance(result, DeadLetterEvent)
    assert result.reason == "timestamp_out_of_range"
    assert field in result.detail


def test_an_event_older_than_its_retention_is_a_dead_letter_not_a_row_that_expires() -> None:
    old = InferenceEvent(request_id="r", model="m", prompt="p", latency_ms=1.0, timestamp=NOW - timedelta(days=91))
    result = decoded(old.model_dump_json().encode())
    assert isinstance(result, DeadLetterEvent)
    assert result.reason == "older_than_retention"
    assert "LLMWATCH_RETENTION__EVENTS_DAYS" in result.detail
    recent = old.model_copy(update={"timestamp": NOW - timedelta(days=89)})
    assert isinstance(decoded(recent.model_dump_json().encode()), InferenceEvent)


def test_retention_is_per_table_and_zero_keeps_forever() -> None:
    point = MetricPoint(name="requests", value=1, window_start=NOW - timedelta(days=200), window_seconds=60,
                        timestamp=NOW)
    metrics = RawRecord("llm.metrics", 0, 0, point.model_dump_json().encode(), None)
    assert isinstance(decode(metrics, MetricPoint, LIMITS, NOW), MetricPoint)  # 365 days for metrics
    old = FeedbackEvent(request_id="r", thumbs="up", timestamp=NOW - timedelta(days=3000))
    forever = Limits(10_000, 64, retention_days={"events": 0})
    assert isinstance(decode(record(old.model_dump_json().encode()), FeedbackEvent, forever, NOW), FeedbackEvent)


@pytest.mark.parametrize("payload", [b"nonsense", b'{"name": "x", "value": "high"}', b"[]",
                                     b'{"name": "x", "value": 1, "window_start": "2026-12-02T12:00:00Z", '
                                     b'"window_seconds": 0}'])
def test_bad_input_on_the_metrics_topic_is_dead_lettered_too(payload: bytes) -> None:
    result = decode(RawRecord("llm.metrics", 0, 5, payload, None), MetricPoint, LIMITS, NOW)
    assert isinstance(result, DeadLetterEvent)
    assert result.origin_topic == "llm.metrics"

"""Turn raw Kafka records into typed events, or into dead letters that say what was wrong.

Errors are data here: nothing raises, every record comes out as exactly one event or one dead letter,
so that the counts reconcile (in = stored + dead-lettered) and one poison message never stops a worker.

What a replay must not change is derived from the record itself: a message without `event_id` gets an
id from where it sits and what it is (topic, partition, offset, Kafka timestamp, a hash of its bytes),
and one without `timestamp` gets the Kafka record's timestamp, so a batch replayed after a crash lands
on the same rows. Offsets alone would not do: the embedded broker starts again at offset 0 after a
restart, and a new message must not collapse into the row of an old one.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pydantic import ValidationError

from schemas.events import DeadLetterEvent, DeadLetterReason, Event, utcnow

E = TypeVar("E", bound=Event)

_DEAD_LETTER_NAMESPACE = uuid.UUID("6f1c2f38-5e0c-4d4b-9a51-2f0e8f1f6c1d")
_EVENT_NAMESPACE = uuid.UUID("3d0b1c52-8f7e-4a4e-b7f1-0c6a1e5d9b27")

STORABLE_TIMES = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC))
"""ClickHouse's DateTime64 range: a time outside it is not what the producer meant, and TTLs misread it."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A message as it came off the topic, with where it came from (and the broker's timestamp, if any)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp_ms: int | None = None

    def fingerprint(self) -> str:
        """Where and what: unique per message, the same each time the message is read again."""
        digest = hashlib.sha256(self.value or b"").hexdigest()
        return f"{self.topic}/{self.partition}/{self.offset}/{self.timestamp_ms}/{digest}"


@dataclass(frozen=True, slots=True)
class Limits:
    max_event_bytes: int
    dead_letter_raw_bytes: int
    retention_days: Mapping[str, int] = field(default_factory=dict)
    """Days kept per retention class (`Event.retention`); an older event would expire at once. 0: forever."""


def derived_event_id(record: RawRecord) -> uuid.UUID:
    return uuid.uuid5(_EVENT_NAMESPACE, record.fingerprint())


def dead_letter(record: RawRecord, reason: DeadLetterReason, detail: str, limits: Limits) -> DeadLetterEvent:
    """The id comes from the record, so a replayed poison message is stored once, and a new one beside it."""
    raw = record.value or b""
    return DeadLetterEvent(
        event_id=uuid.uuid5(_DEAD_LETTER_NAMESPACE, record.fingerprint()),
        origin_topic=record.topic,
        origin_partition=record.partition,
        origin_offset=record.offset,
        reason=reason,
        detail=detail[:2000],
        raw=raw[: limits.dead_letter_raw_bytes],
        raw_size=len(raw),
        truncated=len(raw) > limits.dead_letter_raw_bytes,
    )


def _classify(exc: ValidationError) -> tuple[DeadLetterReason, str]:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return "not_json", f"not valid JSON: {first['msg']}"
    if first["loc"] == () and first["type"] in {"model_type", "model_attributes_type", "dict_type"}:
        return "not_an_object", "the message must be a JSON object"
    if any(error["loc"][:1] == ("schema_version",) for error in errors):
        version_error = next(error for error in errors if error["loc"][:1] == ("schema_version",))
        return "unknown_schema_version", version_error["msg"]
    summary = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<event>'}: {e['msg']}" for e in errors[:10])
    return "invalid_fields", summary


def _with_origin(event: E, record: RawRecord) -> E:
    """Fill what the producer left out from the record, so that a replay yields the very same row."""
    update: dict[str, object] = {}
    if "event_id" not in event.model_fields_set:
        update["event_id"] = derived_event_id(record)
    if "timestamp" not in event.model_fields_set and record.timestamp_ms is not None and record.timestamp_ms >= 0:
        update["timestamp"] = datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC)
    return event.model_copy(update=update) if update else event


def _times(event: Event, limits: Limits, now: datetime) -> tuple[DeadLetterReason, str] | None:
    """A time ClickHouse cannot hold, or one the table's retention would delete at once, is refused here."""
    lo, hi = STORABLE_TIMES
    for name, value in event.__dict__.items():  # the fields and their values, without a getattr per field
        if isinstance(value, datetime) and not lo <= value <= hi:
            return "timestamp_out_of_range", f"{name} {value.isoformat()} is outside {lo:%Y-%m-%d}..{hi:%Y-%m-%d}"
    days = limits.retention_days.get(type(event).retention, 0)
    age = getattr(event, type(event).age_column)
    if days and age < now - timedelta(days=days):
        setting = f"LLMWATCH_RETENTION__{type(event).retention.upper()}_DAYS"
        return "older_than_retention", (
            f"{type(event).age_column} {age.isoformat()} is older than the {days}-day retention of "
            f"{type(event).table} ({setting}): the row would be deleted as soon as it was stored")
    return None


def decode(record: RawRecord, model: type[E], limits: Limits, now: datetime | None = None) -> E | DeadLetterEvent:
    """`now` is for the retention check; a batch passes one for all its records (a clock read per event showed)."""
    value = record.value
    if not value:
        return dead_letter(record, "empty", "the message has no value", limits)
    if len(value) > limits.max_event_bytes:
        return dead_letter(
            record, "too_large",
            f"{len(value)} bytes is over the {limits.max_event_bytes}-byte limit (LLMWATCH_MAX_EVENT_BYTES)",
            limits,
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return dead_letter(record, "invalid_utf8", f"not UTF-8: {exc}", limits)
    try:
        event = _with_origin(model.model_validate_json(text), record)
    except ValidationError as exc:
        reason, detail = _classify(exc)
        return dead_letter(record, reason, detail, limits)
    if refused := _times(event, limits, now or utcnow()):
        return dead_letter(record, *refused, limits)
    return event

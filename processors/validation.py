"""Turn raw Kafka records into typed events, or into dead letters that say what was wrong.

Errors are data here: nothing raises, every record comes out as exactly one event or one dead letter,
so that the counts reconcile (in = stored + dead-lettered) and one poison message never stops a worker.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError

from schemas.events import DeadLetterEvent, DeadLetterReason, Event

E = TypeVar("E", bound=Event)

_DEAD_LETTER_NAMESPACE = uuid.UUID("6f1c2f38-5e0c-4d4b-9a51-2f0e8f1f6c1d")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A message as it came off the topic, with where it came from."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Limits:
    max_event_bytes: int
    dead_letter_raw_bytes: int


def dead_letter(record: RawRecord, reason: DeadLetterReason, detail: str, limits: Limits) -> DeadLetterEvent:
    """The id comes from the origin, so a replayed poison message is stored once, not twice."""
    raw = record.value or b""
    return DeadLetterEvent(
        event_id=uuid.uuid5(_DEAD_LETTER_NAMESPACE, f"{record.topic}/{record.partition}/{record.offset}"),
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


def decode(record: RawRecord, model: type[E], limits: Limits) -> E | DeadLetterEvent:
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
        return model.model_validate_json(text)
    except ValidationError as exc:
        reason, detail = _classify(exc)
        return dead_letter(record, reason, detail, limits)

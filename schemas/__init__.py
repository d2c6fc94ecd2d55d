"""The event contract: versioned pydantic models, their JSON Schema export and the ClickHouse DDL."""

from schemas.events import (
    EVENT_KINDS,
    SCHEMA_VERSION,
    AlertEvent,
    ChatMessage,
    DeadLetterEvent,
    DeploymentEvent,
    Event,
    FeedbackEvent,
    InferenceEvent,
    MetricPoint,
    ModelCandidateEvent,
    TrainingRunEvent,
)

__all__ = [
    "EVENT_KINDS",
    "SCHEMA_VERSION",
    "AlertEvent",
    "ChatMessage",
    "DeadLetterEvent",
    "DeploymentEvent",
    "Event",
    "FeedbackEvent",
    "InferenceEvent",
    "MetricPoint",
    "ModelCandidateEvent",
    "TrainingRunEvent",
]

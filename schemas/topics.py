"""Where each event is published and under which key: decided here, once, for every producer.

Keys put what must be read in order on one partition: inference and metric points by model (and
adapter), feedback by request id, dead letters by the topic they came from. A request and its feedback
therefore do not share a partition; they meet in ClickHouse, joined by request id.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import (
    AlertEvent,
    AuditEvent,
    DeadLetterEvent,
    DeploymentEvent,
    Event,
    FeedbackEvent,
    InferenceEvent,
    MetricPoint,
    ModelCandidateEvent,
    SilenceEvent,
    TrainingRunEvent,
)


class Topics(BaseModel):
    """Kafka topic names; override one with e.g. LLMWATCH_TOPICS__INFERENCE=prod.llm.inference."""

    model_config = ConfigDict(frozen=True)

    inference: str = "llm.inference"
    feedback: str = "llm.feedback"
    metrics: str = "llm.metrics"
    alerts: str = "llm.alerts"
    models: str = "llm.models"
    deployments: str = "llm.deployments"
    training: str = "llm.training"
    deadletter: str = "llm.deadletter"
    silences: str = "llm.silences"
    audit: str = "llm.audit"
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    def names(self) -> list[str]:
        return [self.inference, self.feedback, self.metrics, self.alerts, self.models, self.deployments,
                self.training, self.deadletter, self.silences, self.audit]


def model_key(model: str, adapter: str | None) -> str:
    return f"{model}:{adapter}" if adapter else model


def destination(event: Event, topics: Topics) -> tuple[str, bytes]:
    """(topic, key) for an event; every producer (SDK, gateway, worker, trainer, deployer) asks here."""
    match event:
        case InferenceEvent():
            return topics.inference, model_key(event.model, event.adapter).encode()
        case FeedbackEvent():
            return topics.feedback, event.request_id.encode()
        case MetricPoint():
            return topics.metrics, model_key(event.model, event.adapter).encode()
        case AlertEvent():
            return topics.alerts, event.fingerprint.encode() or event.rule.encode()
        case TrainingRunEvent():
            return topics.training, event.base_model.encode()
        case ModelCandidateEvent():
            return topics.models, event.base_model.encode()
        case DeploymentEvent():
            return topics.deployments, event.base_model.encode()
        case SilenceEvent():
            return topics.silences, event.rule.encode()
        case AuditEvent():
            return topics.audit, event.action.encode()
        case DeadLetterEvent():
            return topics.deadletter, event.origin_topic.encode()
    raise TypeError(f"{type(event).__name__} is not published to Kafka")

"""The contract between producers and processors: one versioned pydantic model per event kind.

Fields added later must be optional so that old and new producers and workers can run side by side;
unknown fields are ignored for the same reason. Timestamps must carry a zone and are kept in UTC.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal, Self
from uuid import UUID, uuid4

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})


def utcnow() -> datetime:
    return datetime.now(UTC)


def _supported_version(version: int) -> int:
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ValueError(
            f"schema_version {version} is not supported by this worker "
            f"(supported: {sorted(SUPPORTED_SCHEMA_VERSIONS)}); upgrade llmwatch"
        )
    return version


UtcDatetime = Annotated[AwareDatetime, AfterValidator(lambda value: value.astimezone(UTC))]
Name = Annotated[str, Field(min_length=1, max_length=256)]
TokenCount = Annotated[int, Field(ge=0, le=2**32 - 1)]


class Event(BaseModel):
    """Fields every event carries: a stable id for idempotent storage, a version, a UTC time."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    table: ClassVar[str]
    json_fields: ClassVar[frozenset[str]] = frozenset()
    retention: ClassVar[Literal["events", "metrics", "dead_letters"]] = "events"
    age_column: ClassVar[str] = "timestamp"

    event_id: UUID = Field(default_factory=uuid4, description=(
        "The event's identity: the store keeps one row per event_id. For exactly-once rows across your own "
        "retries, send a UUID fixed once per event (e.g. a UUIDv5 of your request id) and the same one on "
        "every resend. Left out, the worker derives it from the Kafka record (topic, partition, offset, "
        "timestamp, bytes): a replay of that record stays one row, but a resend by the producer is a new "
        "record and becomes a second row."))
    schema_version: Annotated[int, AfterValidator(_supported_version)] = SCHEMA_VERSION
    timestamp: UtcDatetime = Field(default_factory=utcnow, description=(
        "when it happened (UTC, 1900..2299); left out, the Kafka record's timestamp. An event older than the "
        "retention of its table is dead-lettered (older_than_retention), not stored and silently expired"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Name
    content: str


class InferenceEvent(Event):
    """One request to the model and its response; `timestamp` is when the request arrived."""

    table: ClassVar[str] = "inference_events"
    json_fields: ClassVar[frozenset[str]] = frozenset({"messages"})

    request_id: Name
    model: Name
    adapter: Name | None = Field(default=None, description="LoRA adapter that served it, if any")
    completed_at: UtcDatetime | None = None
    prompt: str | None = Field(default=None, description="completion-style prompt")
    messages: list[ChatMessage] | None = Field(default=None, description="chat-style prompt")
    response_text: str | None = None
    prompt_tokens: TokenCount | None = None
    completion_tokens: TokenCount | None = None
    cached_prompt_tokens: TokenCount | None = Field(
        default=None, description="prompt tokens served from a cache (part of prompt_tokens, billed cheaper)")
    latency_ms: float = Field(ge=0, description="request arrival to last byte")
    ttft_ms: float | None = Field(default=None, ge=0, description="time to first token")
    status: Literal["ok", "error", "cancelled"] = "ok"
    error: str | None = None
    prompt_template: Name | None = None
    prompt_template_version: Name | None = None
    user_id: Name | None = None
    session_id: Name | None = None
    cohort: Name | None = None
    language: Name | None = None
    attributes: dict[str, str] = Field(default_factory=dict, description="any other app-supplied labels")
    tokens_per_second: float | None = Field(default=None, ge=0, description="completion tokens / latency")
    redacted: bool = Field(default=False, description="personal data was replaced in prompt or response")
    redactions: dict[str, int] = Field(default_factory=dict, description="replacements per kind, e.g. email: 1")
    truncated: bool = Field(default=False, description="text was cut to keep the event under max_event_bytes")

    @model_validator(mode="after")
    def _has_a_prompt(self) -> Self:
        if self.prompt is None and not self.messages:
            raise ValueError("an inference event needs `prompt` or `messages`")
        return self

    @property
    def prompt_text(self) -> str:
        """What the user said: the completion prompt, or the user turns of a chat (not the system turn).

        Scores, embeddings and the prompt-length drift feature all measure this text.
        """
        if self.prompt is not None:
            return self.prompt
        return "\n".join(m.content for m in self.messages or [] if m.role == "user")


class FeedbackContent(BaseModel):
    """What a user can say about one response: the fields a feedback event and the gateway's body share."""

    request_id: Name = Field(description="the request id of the response (its `id` / X-Request-ID)")
    thumbs: Literal["up", "down"] | None = None
    score: float | None = Field(default=None, ge=0, le=1, description="a rating normalised to [0, 1]")
    comment: str | None = Field(default=None, max_length=20_000)
    correction: str | None = Field(default=None, max_length=100_000, description="the answer the user expected")
    user_id: Name | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if self.thumbs is None and self.score is None and self.comment is None and self.correction is None:
            raise ValueError("feedback needs at least one of thumbs, score, comment or correction")
        return self


class FeedbackEvent(FeedbackContent, Event):
    """What a user said about one response; it may arrive before the inference event it refers to."""

    table: ClassVar[str] = "feedback_events"


class MetricPoint(Event):
    """One metric value for one window; recomputing the same window reuses the same event_id."""

    table: ClassVar[str] = "metric_points"
    retention: ClassVar[Literal["events", "metrics", "dead_letters"]] = "metrics"
    age_column: ClassVar[str] = "window_start"

    name: Name
    value: float
    window_start: UtcDatetime
    window_seconds: int = Field(gt=0)
    model: str = ""
    adapter: str = ""
    prompt_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class AlertEvent(Event):
    """An alert series changed state: it started firing, it resolved, or it stopped reporting.

    One event per transition, with an id derived from the series and the episode, so that a replayed
    or re-evaluated transition is stored once. `timestamp` is when the transition was judged.
    """

    table: ClassVar[str] = "alerts"

    rule: Name
    state: Literal["firing", "resolved", "no_data"]
    severity: Literal["info", "warning", "critical"] = "warning"
    metric: Name
    value: float
    threshold: float
    model: str = ""
    adapter: str = ""
    labels: dict[str, str] = Field(default_factory=dict, description="series and rule labels, with alertname")
    message: str = ""
    fingerprint: str = ""
    prompt_version: str = ""
    window_start: UtcDatetime | None = Field(default=None, description="the window judged")
    window_seconds: int = Field(default=0, ge=0)
    starts_at: UtcDatetime | None = Field(default=None, description="when the episode began (pending or firing)")
    ends_at: UtcDatetime | None = Field(default=None, description="when it resolved")
    annotations: dict[str, str] = Field(default_factory=dict)
    request_ids: list[str] = Field(default_factory=list, description="up to 5 requests behind the breach")
    actions: list[str] = Field(default_factory=list, description="what the rule asks for: webhook, retrain")
    silenced: bool = Field(default=False, description="a silence matched: stored and published, no webhook")


class SilenceEvent(Event):
    """Mutes an alert rule's webhooks (all its series, or those whose labels match) until `ends_at`.

    Re-publishing a silence with the same `silence_id` replaces it: that is how one is lifted early.
    """

    table: ClassVar[str] = "silences"
    retention: ClassVar[Literal["events", "metrics", "dead_letters"]] = "metrics"

    silence_id: Name
    rule: Name = Field(description="glob on the rule name")
    matchers: dict[str, str] = Field(default_factory=dict, description="globs on series labels")
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    created_by: str = ""
    comment: str = ""


class AuditEvent(Event):
    """A change a person or the loop made: who (a key's fingerprint, a login, a process), what, before and after.

    Never carries a secret nor personal data: keys appear as `key_fingerprint`, an erasure as its counts.
    """

    table: ClassVar[str] = "audit"
    retention: ClassVar[Literal["events", "metrics", "dead_letters"]] = "metrics"

    actor: Name = Field(description="key:<fingerprint> for an API key, user@host for the CLI, or the process")
    action: Name = Field(description="route.change, alert.silence, rules.reload, drift.pin_reference, erasure, ...")
    target: str = Field(default="", description="what changed: a model, a rule, a file")
    before: str = Field(default="", description="JSON of the state before, when known")
    after: str = Field(default="", description="JSON of the state after")


def key_fingerprint(key: str) -> str:
    """A short, stable name for an API key in the audit trail; the key cannot be recovered from it."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


TrainingStatus = Literal[
    "queued", "building_dataset", "training", "evaluating", "succeeded", "failed", "skipped", "running",
]
"""`running` is the old catch-all step, still accepted from older producers."""
TERMINAL_TRAINING_STATUSES = frozenset({"succeeded", "failed", "skipped"})


class TrainingRunEvent(Event):
    """A step in the life of one LoRA fine-tuning run: one event per step, and one every few training steps.

    A run is its events with one `run_id`; the latest says where it stands. `trigger_alert_id` is how the
    trainer knows that an alert has been answered already, also after a restart.
    """

    table: ClassVar[str] = "training_runs"

    run_id: Name
    status: TrainingStatus
    base_model: Name
    trigger_alert_id: UUID | None = None
    dataset_size: int | None = Field(default=None, ge=0)
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    artifact_uri: str | None = None
    error: str | None = None
    adapter: str = Field(default="", description="the adapter the alert named (what serves now), if any")
    adapter_name: str = Field(default="", description="the name the candidate adapter gets")
    step: int | None = Field(default=None, ge=0, le=2**32 - 1, description="training step, while training")
    max_steps: int | None = Field(default=None, ge=0, le=2**32 - 1)
    loss: float | None = Field(default=None, description="mean training loss over the last steps")
    reason: str = Field(default="", description="why it was skipped or failed, or the gate's verdict")


class ModelCandidateEvent(Event):
    """A trained adapter with its evaluation against what serves now, offered for deployment if it passed."""

    table: ClassVar[str] = "model_candidates"

    run_id: Name
    base_model: Name
    adapter_name: Name
    adapter_uri: str
    eval_metrics: dict[str, float] = Field(default_factory=dict)
    passed_gate: bool
    gate_reason: str = ""
    baseline: str = Field(default="", description="what it was compared with: the base model or an adapter")
    baseline_metrics: dict[str, float] = Field(default_factory=dict, description="the same numbers for `baseline`")
    trigger_alert_id: UUID | None = None
    dataset_size: int | None = Field(default=None, ge=0)
    manifest_uri: str = Field(default="", description="the adapter's manifest.json: its whole lineage")


class DeploymentEvent(Event):
    """A change to what serves traffic: load, canary, promote, roll back, unload, or a route set by hand.

    Routes are events: a succeeded event with a `route` sets that gateway route to `weights` (none: the route
    is removed); every gateway applies them in timestamp order and rebuilds them from the table at start.
    """

    table: ClassVar[str] = "deployments"

    deployment_id: Name
    base_model: Name
    adapter_name: Name | None = None
    action: Literal["load", "canary", "promote", "rollback", "unload", "route", "approve", "pause"]
    status: Literal["started", "succeeded", "failed"]
    traffic_percent: float = Field(default=0, ge=0, le=100)
    reason: str = ""
    route: str = Field(default="", max_length=64, description="the gateway route this changes; empty: none")
    weights: dict[str, float] = Field(default_factory=dict, description="the route's targets after the change")
    stable_adapter: str = Field(default="", description="what served before the canary; empty: the base model")
    actor: str = Field(default="", description="who made the change: deployer, admin (/admin/routes), cli")
    run_id: str = Field(default="", description="the training run that made the adapter")
    trigger_alert_id: UUID | None = None
    numbers: dict[str, float] = Field(default_factory=dict, description="the canary analysis behind the change")


DeadLetterReason = Literal[
    "empty", "too_large", "invalid_utf8", "not_json", "not_an_object", "unknown_schema_version",
    "invalid_fields", "rejected_by_store", "timestamp_out_of_range", "older_than_retention",
]


class DeadLetterEvent(Event):
    """Input that could not be stored, kept with its raw bytes (or a prefix), why, and where from."""

    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_bytes="base64", val_json_bytes="base64")
    table: ClassVar[str] = "dead_letters"
    retention: ClassVar[Literal["events", "metrics", "dead_letters"]] = "dead_letters"

    origin_topic: str
    origin_partition: int
    origin_offset: int
    reason: DeadLetterReason
    detail: str
    raw: bytes = Field(description="the raw message value, base64 in JSON, cut to a prefix")
    raw_size: int = Field(ge=0)
    truncated: bool


class ScoredInferenceEvent(InferenceEvent):
    """How an inference event is stored: the event plus the scores the ingest step gives it."""

    prompt_toxicity: float = Field(ge=0, le=1)
    response_toxicity: float | None = Field(default=None, ge=0, le=1)
    toxic: bool
    refusal: bool
    sentiment: float | None = Field(default=None, ge=-1, le=1, description="VADER compound of the response")
    groups: list[str] = Field(default_factory=list, description="demographic groups named in the prompt")
    prompt_length: int = Field(default=0, ge=0, description="characters of `prompt_text`")
    cost_input: float | None = Field(default=None, ge=0, description="US dollars for the prompt tokens")
    cost_output: float | None = Field(default=None, ge=0, description="US dollars for the completion tokens")
    cost_total: float | None = Field(default=None, ge=0, description="empty: no price known for the model")
    price_version: str = Field(default="", description="which price: settings:<digest>, self-hosted:<digest>, "
                               "genai-prices-<version>")


class TextEmbedding(Event):
    """A sampled prompt or response embedding; event_id is the inference event's."""

    table: ClassVar[str] = "embeddings"

    model: str
    adapter: str
    prompt_version: str
    field: Literal["prompt", "response"]
    vector: list[float]


SeriesStatus = Literal["ok", "pending", "firing", "no_data"]


class SeriesState(Event):
    """Where one alert series stands: stored on every change, so a restart resumes it (nothing re-fires)."""

    table: ClassVar[str] = "alert_state"
    retention: ClassVar[Literal["events", "metrics", "dead_letters"]] = "metrics"

    fingerprint: str
    rule: str
    metric: str
    series: dict[str, str] = Field(description="model, adapter, prompt_version and the point's labels")
    status: SeriesStatus = "ok"
    severity: str = ""
    value: float | None = None
    breaches: int = Field(default=0, ge=0, description="consecutive breaching windows")
    last_window_start: UtcDatetime | None = None
    last_seen: UtcDatetime | None = Field(default=None, description="when a point of the series last arrived")
    pending_since: UtcDatetime | None = None
    firing_since: UtcDatetime | None = None
    cleared_at: UtcDatetime | None = Field(default=None, description="when a firing series stopped breaching")


EVENT_KINDS: dict[str, type[Event]] = {
    "inference": InferenceEvent,
    "feedback": FeedbackEvent,
    "metric_point": MetricPoint,
    "alert": AlertEvent,
    "training_run": TrainingRunEvent,
    "model_candidate": ModelCandidateEvent,
    "deployment": DeploymentEvent,
    "dead_letter": DeadLetterEvent,
    "silence": SilenceEvent,
    "audit": AuditEvent,
}

STORED_MODELS: tuple[type[Event], ...] = (
    ScoredInferenceEvent, *(kind for kind in EVENT_KINDS.values() if kind is not InferenceEvent), TextEmbedding,
    SeriesState,
)
"""One model per ClickHouse table: what the writer writes and retention governs."""

-- Tables are ReplacingMergeTree with event_id in the sorting key: a replayed event collapses into
-- its first copy, and queries read with FINAL (llmwatch sets final=1) so no duplicate is ever seen.

CREATE TABLE IF NOT EXISTS inference_events (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    request_id String,
    model LowCardinality(String),
    adapter LowCardinality(Nullable(String)),
    completed_at Nullable(DateTime64(3, 'UTC')),
    prompt Nullable(String),
    messages Nullable(String) COMMENT 'JSON array of {role, content}',
    response_text Nullable(String),
    prompt_tokens Nullable(UInt32),
    completion_tokens Nullable(UInt32),
    latency_ms Float64,
    ttft_ms Nullable(Float64),
    status LowCardinality(String),
    error Nullable(String),
    prompt_template LowCardinality(Nullable(String)),
    prompt_template_version LowCardinality(Nullable(String)),
    user_id Nullable(String),
    session_id Nullable(String),
    cohort LowCardinality(Nullable(String)),
    language LowCardinality(Nullable(String)),
    attributes Map(String, String),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (model, timestamp, event_id);

CREATE TABLE IF NOT EXISTS feedback_events (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    request_id String,
    thumbs LowCardinality(Nullable(String)),
    score Nullable(Float64),
    comment Nullable(String),
    correction Nullable(String),
    user_id Nullable(String),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (request_id, event_id);

CREATE TABLE IF NOT EXISTS metric_points (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    name LowCardinality(String),
    value Float64,
    window_start DateTime64(3, 'UTC'),
    window_seconds UInt32,
    model LowCardinality(String),
    adapter LowCardinality(String),
    prompt_version LowCardinality(String),
    labels Map(String, String),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (name, model, adapter, window_seconds, window_start, event_id);

CREATE TABLE IF NOT EXISTS alerts (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    rule LowCardinality(String),
    state LowCardinality(String),
    severity LowCardinality(String),
    metric LowCardinality(String),
    value Float64,
    threshold Float64,
    model LowCardinality(String),
    adapter LowCardinality(String),
    labels Map(String, String),
    message String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (rule, timestamp, event_id);

CREATE TABLE IF NOT EXISTS training_runs (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    run_id String,
    status LowCardinality(String),
    base_model LowCardinality(String),
    trigger_alert_id Nullable(UUID),
    dataset_size Nullable(UInt64),
    params Map(String, String),
    metrics Map(String, Float64),
    artifact_uri Nullable(String),
    error Nullable(String),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (run_id, timestamp, event_id);

CREATE TABLE IF NOT EXISTS model_candidates (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    run_id String,
    base_model LowCardinality(String),
    adapter_name String,
    adapter_uri String,
    eval_metrics Map(String, Float64),
    passed_gate Bool,
    gate_reason String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (adapter_name, timestamp, event_id);

CREATE TABLE IF NOT EXISTS deployments (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    deployment_id String,
    base_model LowCardinality(String),
    adapter_name Nullable(String),
    action LowCardinality(String),
    status LowCardinality(String),
    traffic_percent Float64,
    reason String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (deployment_id, timestamp, event_id);

CREATE TABLE IF NOT EXISTS dead_letters (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    origin_topic LowCardinality(String),
    origin_partition Int32,
    origin_offset Int64,
    reason LowCardinality(String),
    detail String,
    raw String COMMENT 'raw message bytes, cut to LLMWATCH_DEAD_LETTER_RAW_BYTES',
    raw_size UInt64,
    truncated Bool,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (origin_topic, origin_partition, origin_offset, event_id);

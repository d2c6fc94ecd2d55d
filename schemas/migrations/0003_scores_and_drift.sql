-- Per-event scores given at ingest, sampled embeddings for drift, and the pinned drift reference.

ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS prompt_toxicity Float32 DEFAULT 0;
ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS response_toxicity Nullable(Float32);
ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS toxic Bool DEFAULT false;
ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS refusal Bool DEFAULT false;
ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS sentiment Nullable(Float32);
ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS groups Array(LowCardinality(String));

CREATE TABLE IF NOT EXISTS embeddings (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    model LowCardinality(String),
    adapter LowCardinality(String),
    prompt_version LowCardinality(String),
    field LowCardinality(String),
    vector Array(Float32),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (timestamp, event_id, field);

CREATE TABLE IF NOT EXISTS drift_reference (
    event_id UUID,
    pinned_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
ORDER BY event_id;

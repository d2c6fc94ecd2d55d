-- Alert rules: what each alert event carries, where every alert series stands (so a restart resumes it),
-- and silences.

ALTER TABLE alerts ADD COLUMN IF NOT EXISTS fingerprint String DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS prompt_version LowCardinality(String) DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS window_start Nullable(DateTime64(3, 'UTC'));
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS window_seconds UInt32 DEFAULT 0;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS starts_at Nullable(DateTime64(3, 'UTC'));
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS ends_at Nullable(DateTime64(3, 'UTC'));
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS annotations Map(String, String);
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS request_ids Array(String);
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS actions Array(LowCardinality(String));
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS silenced Bool DEFAULT false;

CREATE TABLE IF NOT EXISTS alert_state (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    fingerprint String,
    rule LowCardinality(String),
    metric LowCardinality(String),
    series Map(String, String),
    status LowCardinality(String),
    severity LowCardinality(String),
    value Nullable(Float64),
    breaches UInt32,
    last_window_start Nullable(DateTime64(3, 'UTC')),
    last_seen Nullable(DateTime64(3, 'UTC')),
    pending_since Nullable(DateTime64(3, 'UTC')),
    firing_since Nullable(DateTime64(3, 'UTC')),
    cleared_at Nullable(DateTime64(3, 'UTC')),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(timestamp)
ORDER BY event_id;

CREATE TABLE IF NOT EXISTS silences (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    silence_id String,
    rule String,
    matchers Map(String, String),
    starts_at DateTime64(3, 'UTC'),
    ends_at DateTime64(3, 'UTC'),
    created_by String,
    comment String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(timestamp)
ORDER BY event_id;

-- What each answer cost, computed at ingest with the price in force then; price_version names that price,
-- so a later price change does not rewrite history. Rows stored before this migration have no cost.
-- cached_prompt_tokens is part of prompt_tokens (served from a prefix cache) and billed at its own price.

ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS cached_prompt_tokens Nullable(UInt32)
    COMMENT 'prompt tokens served from a cache; part of prompt_tokens' AFTER completion_tokens;
ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS cost_input Nullable(Float64) COMMENT 'US dollars, prompt tokens';
ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS cost_output Nullable(Float64) COMMENT 'US dollars, completion tokens';
ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS cost_total Nullable(Float64) COMMENT 'US dollars; NULL: no price known';
ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS price_version LowCardinality(String) DEFAULT ''
    COMMENT 'settings:<digest>, self-hosted:<digest> or genai-prices-<version>';

-- The audit trail: every change a person or the loop made (route, silence, rules reload, drift reference,
-- erasure), who made it (a key's fingerprint, never the key) and the state before and after.
CREATE TABLE IF NOT EXISTS audit (
    event_id UUID,
    schema_version UInt16,
    timestamp DateTime64(3, 'UTC'),
    actor String,
    action LowCardinality(String),
    target String,
    before String,
    after String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (timestamp, event_id);

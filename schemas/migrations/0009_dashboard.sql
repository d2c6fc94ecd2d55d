-- The dashboard's Overview per window and series (model, adapter, prompt version), pivoted as metric points are
-- stored: one row per window and series instead of dozens of points read with FINAL, so a day of charts reads
-- thousands of rows, not millions. Each value is the newest computation's (argMax by the point's timestamp),
-- so a replayed point changes nothing and a window recomputed at the feedback horizon replaces its values, as
-- FINAL would; the largest bias gap is the largest of the newest pass (argMax by (timestamp, gap)). A row that
-- is not the column's point counts with time 0 and value NaN, so a window without that point reads NaN (shown
-- as missing, not zero). Retention follows the metric points' (streams/store/client.py applies it).

CREATE TABLE IF NOT EXISTS overview_windows (
    window_seconds UInt32,
    window_start DateTime64(3, 'UTC'),
    model LowCardinality(String),
    adapter LowCardinality(String),
    prompt_version LowCardinality(String),
    requests AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    error_rate AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    toxic_rate AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    latency_p50_ms AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    latency_p95_ms AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    latency_p99_ms AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    ttft_p50_ms AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    ttft_p95_ms AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    feedback_count AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    thumbs_down_rate AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    correction_rouge_l_mean AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    bias_gap AggregateFunction(argMax, Float64, Tuple(DateTime64(3, 'UTC'), Float64))
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_seconds, window_start, model, adapter, prompt_version);

CREATE MATERIALIZED VIEW IF NOT EXISTS overview_windows_mv TO overview_windows AS
SELECT window_seconds, window_start, model, adapter, prompt_version,
       argMaxState(if(name = 'requests', value, nan), if(name = 'requests', timestamp, toDateTime64(0, 3, 'UTC'))) AS requests,
       argMaxState(if(name = 'error_rate', value, nan), if(name = 'error_rate', timestamp, toDateTime64(0, 3, 'UTC'))) AS error_rate,
       argMaxState(if(name = 'toxic_rate', value, nan), if(name = 'toxic_rate', timestamp, toDateTime64(0, 3, 'UTC'))) AS toxic_rate,
       argMaxState(if(name = 'latency_p50_ms', value, nan), if(name = 'latency_p50_ms', timestamp, toDateTime64(0, 3, 'UTC'))) AS latency_p50_ms,
       argMaxState(if(name = 'latency_p95_ms', value, nan), if(name = 'latency_p95_ms', timestamp, toDateTime64(0, 3, 'UTC'))) AS latency_p95_ms,
       argMaxState(if(name = 'latency_p99_ms', value, nan), if(name = 'latency_p99_ms', timestamp, toDateTime64(0, 3, 'UTC'))) AS latency_p99_ms,
       argMaxState(if(name = 'ttft_p50_ms', value, nan), if(name = 'ttft_p50_ms', timestamp, toDateTime64(0, 3, 'UTC'))) AS ttft_p50_ms,
       argMaxState(if(name = 'ttft_p95_ms', value, nan), if(name = 'ttft_p95_ms', timestamp, toDateTime64(0, 3, 'UTC'))) AS ttft_p95_ms,
       argMaxState(if(name = 'feedback_count', value, nan), if(name = 'feedback_count', timestamp, toDateTime64(0, 3, 'UTC'))) AS feedback_count,
       argMaxState(if(name = 'thumbs_down_rate', value, nan), if(name = 'thumbs_down_rate', timestamp, toDateTime64(0, 3, 'UTC'))) AS thumbs_down_rate,
       argMaxState(if(name = 'correction_rouge_l_mean', value, nan), if(name = 'correction_rouge_l_mean', timestamp, toDateTime64(0, 3, 'UTC'))) AS correction_rouge_l_mean,
       argMaxState(if(name LIKE 'bias.%.gap', value, nan),
                   if(name LIKE 'bias.%.gap', (timestamp, value), (toDateTime64(0, 3, 'UTC'), -inf))) AS bias_gap
FROM metric_points
WHERE model != '' AND (name IN ('requests', 'error_rate', 'toxic_rate', 'latency_p50_ms', 'latency_p95_ms',
                                'latency_p99_ms', 'ttft_p50_ms', 'ttft_p95_ms', 'feedback_count',
                                'thumbs_down_rate', 'correction_rouge_l_mean') OR name LIKE 'bias.%.gap')
GROUP BY window_seconds, window_start, model, adapter, prompt_version;

-- Points stored before this migration.
INSERT INTO overview_windows
SELECT window_seconds, window_start, model, adapter, prompt_version,
       argMaxState(if(name = 'requests', value, nan), if(name = 'requests', timestamp, toDateTime64(0, 3, 'UTC'))),
       argMaxState(if(name = 'error_rate', value, nan), if(name = 'error_rate', timestamp, toDateTime64(0, 3, 'UTC'))),
       argMaxState(if(name = 'toxic_rate', value, nan), if(name = 'toxic_rate', timestamp, toDateTime64(0, 3, 'UTC'))),
       argMaxState(if(name = 'latency_p50_ms', value, nan), if(name = 'latency_p50_ms', timestamp, toDateTime64(0, 3, 'UTC'))),
       argMaxState(if(name = 'latency_p95_ms', value, nan), if(name = 'latency_p95_ms', timestamp, toDateTime64(0, 3, 'UTC'))),
       argMaxState(if(name = 'latency_p99_ms', value, nan), if(name = 'latency_p99_ms', timestamp, toDateTime64(0, 3, 'UTC'))),
       argMaxState(if(name = 'ttft_p50_ms', value, nan), if(name = 'ttft_p50_ms', timestamp, toDateTime64(0, 3, 'UTC'))),
       argMaxState(if(name = 'ttft_p95_ms', value, nan), if(name = 'ttft_p95_ms', timestamp, toDateTime64(0, 3, 'UTC'))),
       argMaxState(if(name = 'feedback_count', value, nan), if(name = 'feedback_count', timestamp, toDateTime64(0, 3, 'UTC'))),
       argMaxState(if(name = 'thumbs_down_rate', value, nan), if(name = 'thumbs_down_rate', timestamp, toDateTime64(0, 3, 'UTC'))),
       argMaxState(if(name = 'correction_rouge_l_mean', value, nan), if(name = 'correction_rouge_l_mean', timestamp, toDateTime64(0, 3, 'UTC'))),
       argMaxState(if(name LIKE 'bias.%.gap', value, nan),
                   if(name LIKE 'bias.%.gap', (timestamp, value), (toDateTime64(0, 3, 'UTC'), -inf)))
FROM metric_points FINAL
WHERE model != '' AND (name IN ('requests', 'error_rate', 'toxic_rate', 'latency_p50_ms', 'latency_p95_ms',
                                'latency_p99_ms', 'ttft_p50_ms', 'ttft_p95_ms', 'feedback_count',
                                'thumbs_down_rate', 'correction_rouge_l_mean') OR name LIKE 'bias.%.gap')
GROUP BY window_seconds, window_start, model, adapter, prompt_version;

-- The Requests page finds a request by id, user or session: skip indexes, so that a lookup reads the few
-- granules that may hold it instead of the whole table (the table is sorted by model and time).
ALTER TABLE inference_events ADD INDEX IF NOT EXISTS request_id_bloom request_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE inference_events ADD INDEX IF NOT EXISTS user_id_bloom user_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE inference_events ADD INDEX IF NOT EXISTS session_id_bloom session_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE inference_events MATERIALIZE INDEX request_id_bloom;
ALTER TABLE inference_events MATERIALIZE INDEX user_id_bloom;
ALTER TABLE inference_events MATERIALIZE INDEX session_id_bloom;

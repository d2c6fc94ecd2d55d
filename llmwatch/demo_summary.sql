SELECT
    model,
    ifNull(adapter, '-') AS adapter,
    count() AS requests,
    round(countIf(status != 'ok') / count(), 3) AS error_rate,
    round(quantile(0.5)(latency_ms)) AS p50_ms,
    round(quantile(0.99)(latency_ms)) AS p99_ms,
    round(avgIf(f.thumbs = 'down', f.thumbs != ''), 3) AS thumbs_down_rate
FROM inference_events AS i
LEFT JOIN (SELECT request_id, any(thumbs) AS thumbs FROM feedback_events GROUP BY request_id) AS f
    ON i.request_id = f.request_id
GROUP BY model, adapter
ORDER BY model, adapter

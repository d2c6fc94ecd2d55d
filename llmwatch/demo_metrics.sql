SELECT
    model,
    adapter,
    prompt_version,
    maxIf(value, name = 'requests') AS requests,
    round(maxIf(value, name = 'latency_p99_ms')) AS latency_p99_ms,
    round(maxIf(value, name = 'toxic_rate'), 3) AS toxic_rate,
    round(maxIf(value, name = 'thumbs_down_rate'), 3) AS thumbs_down_rate
FROM metric_points
WHERE window_seconds = {seconds} AND window_start = toDateTime64('{start}', 3, 'UTC') AND model != ''
GROUP BY model, adapter, prompt_version
HAVING requests > 0
ORDER BY model, adapter, prompt_version

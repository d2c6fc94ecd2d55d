"""Metric families: each a pure function from one window's batch (a DataFrame of typed columns) to values."""

METRIC_NAMES = (
    "requests", "error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p95_ms",
    "output_tokens_per_second", "prompt_tokens_total", "completion_tokens_total",
    "toxic_rate", "prompt_toxicity_mean", "response_toxicity_mean",
    "drift.score", "drift.detected", "drift.window_detected", "drift.sample_rate", "drift.samples",
    "drift.reference_size",
    "bias.*", "probe.bias.*",
    "feedback_count", "thumbs_down_rate", "score_mean", "correction_rouge_l_mean", "correction_bleu_mean",
    "feedback_unmatched",
    "vllm.*", "worker.lag",
)
"""Globs of every metric point name the families and the bias probe emit (`llmwatch rules check` warns on others)."""

"""Latency and throughput per model, adapter and prompt version."""

from __future__ import annotations

import numpy as np
import pandas as pd

from processors.families.common import by_group
from processors.windows import MetricValue


def _quantile(values: pd.Series, q: float) -> float | None:
    present = values.dropna().to_numpy(dtype=float)
    return float(np.quantile(present, q)) if present.size else None


def latency_metrics(batch: pd.DataFrame, window_seconds: int) -> list[MetricValue]:
    values = []
    for (model, adapter, version), group in by_group(batch):
        ok = group[group["status"] == "ok"]
        measures: dict[str, float | None] = {
            "requests": float(len(group)),
            "error_rate": float((group["status"] != "ok").mean()),
            "latency_p50_ms": _quantile(ok["latency_ms"], 0.50),
            "latency_p95_ms": _quantile(ok["latency_ms"], 0.95),
            "latency_p99_ms": _quantile(ok["latency_ms"], 0.99),
            "ttft_p50_ms": _quantile(ok["ttft_ms"], 0.50),
            "ttft_p95_ms": _quantile(ok["ttft_ms"], 0.95),
            "output_tokens_per_second": float(group["completion_tokens"].fillna(0).sum()) / window_seconds,
            "prompt_tokens_total": float(group["prompt_tokens"].fillna(0).sum()),
            "completion_tokens_total": float(group["completion_tokens"].fillna(0).sum()),
        }
        values += [MetricValue(name, value, model, adapter, version)
                   for name, value in measures.items() if value is not None]
    return values

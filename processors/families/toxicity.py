"""Toxic rate and mean scores per model, adapter and prompt version (scores were given at ingest)."""

from __future__ import annotations

import pandas as pd

from processors.families.common import by_group
from processors.windows import MetricValue


def toxicity_metrics(batch: pd.DataFrame) -> list[MetricValue]:
    values = []
    for (model, adapter, version), group in by_group(batch):
        measures = {
            "toxic_rate": float(group["toxic"].astype(float).mean()),
            "prompt_toxicity_mean": float(group["prompt_toxicity"].mean()),
        }
        responses = group["response_toxicity"].dropna()
        if len(responses):
            measures["response_toxicity_mean"] = float(responses.mean())
        values += [MetricValue(name, value, model, adapter, version) for name, value in measures.items()]
    return values

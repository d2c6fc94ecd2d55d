"""Drift of a window against a reference, with Evidently's methods.

Embeddings (of a sample of events) use Evidently's bootstrapped distance method: the distance between
mean embeddings must exceed the 99th percentile of distances between resamples of the reference itself.
Text features (prompt length, response length, refusal-like answers) use Evidently's K-S and Z tests on
every event of the window. The window counts as drifted when either embedding has drifted.

Evidently is imported on first use: importing it took seconds of the worker's start, before consuming.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from processors.windows import MetricValue

if TYPE_CHECKING:
    from evidently.legacy.core import ColumnType

EMBEDDING_FIELDS = ("prompt", "response")
TEXT_FEATURES = {"prompt_length": ("ks", "num"), "response_length": ("ks", "num"), "refusal": ("z", "cat")}
"""Feature: (Evidently test, Evidently `ColumnType` value)."""
FEATURE_P_VALUE = 0.01


@cache
def _embedding_drift() -> Any:
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import distance

    return distance(dist="euclidean", bootstrap=True, quantile_probability=0.99)


@dataclass(frozen=True)
class DriftReference:
    embeddings: dict[str, np.ndarray]
    features: pd.DataFrame

    @property
    def size(self) -> int:
        return len(self.embeddings.get("prompt", ()))


def embedding_drift(current: np.ndarray, reference: np.ndarray) -> tuple[float, bool]:
    score, drifted, _ = _embedding_drift()(pd.DataFrame(current), pd.DataFrame(reference))
    return float(score), bool(drifted)


def feature_drift(current: pd.Series, reference: pd.Series, test: str, kind: ColumnType | str) -> tuple[float, bool]:
    """(p-value, drifted); a feature that is constant and equal on both sides has not drifted."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    kind = ColumnType(kind)
    if current.nunique() <= 1 and reference.nunique() <= 1 and set(current) == set(reference):
        return 1.0, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = get_stattest(reference, current, kind, test)(reference, current, kind, FEATURE_P_VALUE)
    return float(result.drift_score), bool(result.drifted)


def drift_metrics(embeddings: dict[str, np.ndarray], features: pd.DataFrame, events_in_window: int,
                  reference: DriftReference, min_samples: int) -> list[MetricValue]:
    """Global (all models): drift is about what users ask and get, whichever model answered."""
    sampled = len(embeddings.get("prompt", ()))
    values = [MetricValue("drift.samples", float(sampled)),
              MetricValue("drift.sample_rate", sampled / events_in_window if events_in_window else 0.0),
              MetricValue("drift.reference_size", float(reference.size))]
    window_drifted = False
    for name in EMBEDDING_FIELDS:
        current, ref = embeddings.get(name), reference.embeddings.get(name)
        if current is None or ref is None or len(current) < min_samples or len(ref) < min_samples:
            continue
        score, drifted = embedding_drift(current, ref)
        window_drifted |= drifted
        values += [MetricValue("drift.score", score, labels={"feature": f"{name}_embedding"}),
                   MetricValue("drift.detected", float(drifted), labels={"feature": f"{name}_embedding"})]
    if len(features) >= min_samples and len(reference.features) >= min_samples:
        for name, (test, kind) in TEXT_FEATURES.items():
            score, drifted = feature_drift(features[name], reference.features[name], test, kind)
            values += [MetricValue("drift.score", score, labels={"feature": name}),
                       MetricValue("drift.detected", float(drifted), labels={"feature": name})]
    if sampled >= min_samples:
        values.append(MetricValue("drift.window_detected", float(window_drifted)))
    return values

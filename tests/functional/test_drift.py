"""Drift on real embeddings (all-MiniLM-L6-v2): quiet on the reference distribution, loud on a shift."""

import random

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.core import ColumnType

from llmwatch.traffic import topic_event
from processors.embedding import Embedder, default_model_path
from processors.families.drift import DriftReference, drift_metrics, feature_drift

WINDOW = 60


@pytest.fixture(scope="module")
def encode():  # type: ignore[no-untyped-def]
    embedder = Embedder(default_model_path(), writer=None, rate=1)  # type: ignore[arg-type]
    embedder.load()
    return embedder.encode


def window(encode, rng: random.Random, topic: str, n: int = WINDOW) -> tuple[dict[str, np.ndarray], pd.DataFrame]:  # type: ignore[no-untyped-def]
    events = [topic_event(rng, topic) for _ in range(n)]
    embeddings = {"prompt": encode([e.prompt_text for e in events]),
                  "response": encode([e.response_text or "" for e in events])}
    features = pd.DataFrame({"prompt_length": [len(e.prompt_text) for e in events],
                             "response_length": [len(e.response_text or "") for e in events],
                             "refusal": [False] * n})
    return embeddings, features


def detected(values: list) -> bool:  # type: ignore[type-arg]
    return next(v.value for v in values if v.name == "drift.window_detected") == 1.0


def test_reference_distribution_is_quiet_and_a_topic_shift_is_caught(encode) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    reference = DriftReference(*window(encode, rng, "weather", 300))
    quiet = [detected(drift_metrics(*window(encode, rng, "weather"), WINDOW, reference, 30)) for _ in range(40)]
    assert sum(quiet) <= 2, f"{sum(quiet)} of 40 windows from the reference distribution reported drift"
    shifted = [detected(drift_metrics(*window(encode, rng, "cooking"), WINDOW, reference, 30)) for _ in range(2)]
    assert any(shifted)


def test_sampling_rate_is_reported_honestly(encode) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(8)
    reference = DriftReference(*window(encode, rng, "weather", 100))
    values = {v.name: v.value for v in drift_metrics(*window(encode, rng, "weather", 40), 1000, reference, 30)}
    assert values["drift.sample_rate"] == 0.04
    assert values["drift.samples"] == 40


def test_too_few_samples_give_no_verdict(encode) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(9)
    reference = DriftReference(*window(encode, rng, "weather", 100))
    names = {v.name for v in drift_metrics(*window(encode, rng, "cooking", 5), 5, reference, 30)}
    assert "drift.window_detected" not in names and "drift.detected" not in names


def test_constant_equal_features_have_not_drifted() -> None:
    assert feature_drift(pd.Series([False] * 50), pd.Series([False] * 80), "z", ColumnType.Categorical) == (1.0, False)

"""Disparities between groups: app-supplied attributes (cohort, language) and groups named in prompts.

For each attribute, every group with at least `min_samples` events gets its rates; where two or more
groups qualify, the window reports the largest gap between them and, for rates, the ratio of the
lowest to the highest (1.0 is parity). A rate disparity is *detected* when the ratio is below the
four-fifths rule (0.8) and a two-proportion z-test says the gap is not noise (p < 0.01).
"""

from __future__ import annotations

import math

import pandas as pd

from processors.windows import MetricValue

RATE_MEASURES = ("toxicity_rate", "refusal_rate", "negative_feedback_rate")
SAMPLE_SIZE = {"toxicity_rate": "n", "refusal_rate": "n", "negative_feedback_rate": "n_feedback"}
FOUR_FIFTHS = 0.8
P_VALUE = 0.01


def two_proportion_p_value(rate_a: float, n_a: float, rate_b: float, n_b: float) -> float:
    """Two-sided p-value that two rates differ; 1.0 where they cannot (both 0 or both 1)."""
    pooled = (rate_a * n_a + rate_b * n_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return 1.0 if se == 0 else math.erfc(abs(rate_a - rate_b) / se / math.sqrt(2))


def with_attribute(frame: pd.DataFrame, attribute: str, mentions: pd.DataFrame) -> pd.DataFrame:
    """Rows labelled with their group for `attribute`: a column, or a lexicon category of `mentions`."""
    if attribute in frame.columns:
        return frame.assign(group=frame[attribute]).loc[lambda f: f["group"] != ""]
    return mentions[mentions["category"] == attribute]


def mentions_of(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (event, group named in its prompt), with `category` and `group` split out; exploded
    once per batch because every lexicon category reads it."""
    exploded = frame.explode("groups", ignore_index=True)
    labels = exploded["groups"].fillna("").astype(str)
    exploded = exploded[labels != ""]
    parts = labels[labels != ""].str.split(":", n=1, expand=True)
    return exploded.assign(category=parts[0], group=parts[1]) if len(exploded) else \
        exploded.assign(category=pd.Series(dtype=str), group=pd.Series(dtype=str))


def negative(feedback: pd.DataFrame) -> pd.Series:
    """Thumbs down, or without thumbs a score below one half; None where the user gave neither."""
    thumbs = feedback["thumbs"].map({"down": 1.0, "up": 0.0})
    from_score = (feedback["score"] < 0.5).astype(float).where(feedback["score"].notna())
    return thumbs.fillna(from_score)


def group_measures(inference: pd.DataFrame, feedback: pd.DataFrame, attribute: str, min_samples: int, *,
                   inference_mentions: pd.DataFrame | None = None,
                   feedback_mentions: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per qualifying group: sample sizes and each measure."""
    if inference_mentions is None:
        inference_mentions = mentions_of(inference)
    if feedback_mentions is None:
        feedback_mentions = mentions_of(feedback)
    events = with_attribute(inference, attribute, inference_mentions)
    per_group = events.groupby("group").agg(
        n=("toxic", "size"),
        toxicity_rate=("toxic", "mean"),
        refusal_rate=("refusal", "mean"),
        sentiment_mean=("sentiment", "mean"),
    )
    per_group = per_group[per_group["n"] >= min_samples]
    rated = with_attribute(feedback, attribute, feedback_mentions).assign(negative=lambda f: negative(f)) \
        .dropna(subset=["negative"])
    feedback_groups = rated.groupby("group").agg(n_feedback=("negative", "size"),
                                                 negative_feedback_rate=("negative", "mean"))
    feedback_groups = feedback_groups[feedback_groups["n_feedback"] >= min_samples]
    return per_group.join(feedback_groups, how="outer").astype(float)


def disparity_values(per_group: pd.DataFrame, attribute: str, model: str, adapter: str) -> list[MetricValue]:
    values = []
    for measure in (*RATE_MEASURES, "sentiment_mean"):
        if measure not in per_group:
            continue
        present = per_group[measure].dropna()
        values += [MetricValue(f"bias.{measure}", float(v), model, adapter, labels={"attribute": attribute,
                                                                                   "group": str(g)})
                   for g, v in present.items()]
        if len(present) < 2:
            continue
        high, low = str(present.idxmax()), str(present.idxmin())
        labels = {"attribute": attribute, "max_group": str(high), "min_group": str(low),
                  "groups": str(len(present))}
        values.append(MetricValue(f"bias.{measure}.gap", float(present[high] - present[low]), model, adapter,
                                  labels=labels))
        if measure in RATE_MEASURES:
            ratio = 1.0 if present[high] == 0 else float(present[low] / present[high])
            n = per_group[SAMPLE_SIZE[measure]]
            p_value = two_proportion_p_value(present[high], n[high], present[low], n[low])
            detected = ratio < FOUR_FIFTHS and p_value < P_VALUE
            values += [MetricValue(f"bias.{measure}.ratio", ratio, model, adapter, labels=labels),
                       MetricValue(f"bias.{measure}.p_value", p_value, model, adapter, labels=labels),
                       MetricValue(f"bias.{measure}.detected", float(detected), model, adapter, labels=labels)]
    return values


def bias_metrics(inference: pd.DataFrame, feedback: pd.DataFrame, attributes: list[str],
                 min_samples: int) -> list[MetricValue]:
    """Per model and adapter: a model's bias is a property of the model, whatever the prompt version."""
    values = []
    matched = feedback[feedback["matched"].astype(bool)]
    for (model, adapter), events in inference.groupby(["model", "adapter"], sort=True):
        rated = matched[(matched["model"] == model) & (matched["adapter"] == adapter)]
        event_mentions, feedback_mentions = mentions_of(events), mentions_of(rated)
        for attribute in attributes:
            per_group = group_measures(events, rated, attribute, min_samples, inference_mentions=event_mentions,
                                       feedback_mentions=feedback_mentions)
            values += disparity_values(per_group, attribute, str(model), str(adapter))
    return values

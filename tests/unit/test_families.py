"""Every metric family on hand-made window batches whose answers are known."""

import numpy as np
import pandas as pd
import pytest

from processors.families.bias import bias_metrics, group_measures, negative
from processors.families.feedback import correction_similarity, feedback_metrics
from processors.families.latency import latency_metrics
from processors.families.toxicity import toxicity_metrics
from processors.windows import MetricValue
from streams.store.windows import FEEDBACK_COLUMNS, INFERENCE_COLUMNS


def inference(n: int, **columns: object) -> pd.DataFrame:
    defaults: dict[str, object] = {
        "model": "m", "adapter": "", "prompt_version": "v1",
        "status": "ok", "latency_ms": np.arange(1, n + 1, dtype=float), "ttft_ms": 10.0, "prompt_tokens": 5.0,
        "completion_tokens": 10.0, "prompt_toxicity": 0.0, "response_toxicity": 0.0, "toxic": False,
        "refusal": False, "sentiment": 0.0, "cohort": "", "language": "en", "groups": [[] for _ in range(n)],
        "prompt_length": 20, "response_length": 40, "user_id": "", "cost_input": np.nan, "cost_output": np.nan,
        "cost_total": np.nan,
    }
    frame = pd.DataFrame({name: columns.get(name, defaults[name]) for name in INFERENCE_COLUMNS}, index=range(n))
    return frame


def feedback(n: int, **columns: object) -> pd.DataFrame:
    defaults: dict[str, object] = {"thumbs": "up", "score": np.nan, "correction": None, "matched": True, "model": "m",
                                   "adapter": "", "prompt_version": "v1", "response_text": "an answer",
                                   "cohort": "", "language": "en", "groups": [[] for _ in range(n)]}
    return pd.DataFrame({name: columns.get(name, defaults[name]) for name in FEEDBACK_COLUMNS}, index=range(n))


def by_name(values: list[MetricValue], **match: str) -> dict[str, float]:
    return {v.name: v.value for v in values
            if all(getattr(v, k, None) == x or v.labels.get(k) == x for k, x in match.items())}


def test_latency_quantiles_rates_and_totals() -> None:
    batch = inference(100, status=["error"] * 10 + ["ok"] * 90)
    values = by_name(latency_metrics(batch, window_seconds=10))
    ok_latencies = np.arange(11, 101, dtype=float)
    assert values["requests"] == 100
    assert values["error_rate"] == pytest.approx(0.1)
    assert values["latency_p50_ms"] == pytest.approx(np.quantile(ok_latencies, 0.5))
    assert values["latency_p99_ms"] == pytest.approx(np.quantile(ok_latencies, 0.99))
    assert values["ttft_p95_ms"] == 10.0
    assert values["completion_tokens_total"] == 1000
    assert values["output_tokens_per_second"] == 100


def test_latency_is_per_model_adapter_and_prompt_version() -> None:
    batch = pd.concat([inference(4), inference(6, adapter="lora-a")], ignore_index=True)
    requests = {(v.model, v.adapter, v.prompt_version): v.value for v in latency_metrics(batch, 10)
                if v.name == "requests"}
    assert requests == {("m", "", "v1"): 4, ("m", "lora-a", "v1"): 6}


def test_toxicity_rates() -> None:
    batch = inference(4, toxic=[True, False, False, False], response_toxicity=[0.9, 0.1, np.nan, 0.2],
                      prompt_toxicity=[0.4, 0.0, 0.0, 0.0])
    values = by_name(toxicity_metrics(batch))
    assert values["toxic_rate"] == 0.25
    assert values["response_toxicity_mean"] == pytest.approx(0.4)
    assert values["prompt_toxicity_mean"] == pytest.approx(0.1)


def test_planted_cohort_disparity_is_reported() -> None:
    batch = inference(100, cohort=["free"] * 50 + ["pro"] * 50,
                      toxic=[i % 2 == 0 for i in range(50)] + [i % 10 == 0 for i in range(50)])
    values = bias_metrics(batch, feedback(0), ["cohort"], min_samples=30)
    gap = next(v for v in values if v.name == "bias.toxicity_rate.gap")
    ratio = next(v for v in values if v.name == "bias.toxicity_rate.ratio")
    assert gap.value == pytest.approx(0.4)
    assert ratio.value == pytest.approx(0.2)
    assert (gap.labels["max_group"], gap.labels["min_group"]) == ("free", "pro")
    assert next(v for v in values if v.name == "bias.toxicity_rate.detected").value == 1.0


def test_a_small_gap_between_small_groups_is_not_called_a_disparity() -> None:
    batch = inference(60, cohort=["free"] * 30 + ["pro"] * 30,
                      toxic=[i < 4 for i in range(30)] + [i < 2 for i in range(30)])
    values = bias_metrics(batch, feedback(0), ["cohort"], min_samples=30)
    assert next(v for v in values if v.name == "bias.toxicity_rate.ratio").value == 0.5
    assert next(v for v in values if v.name == "bias.toxicity_rate.detected").value == 0.0


def test_equal_cohorts_show_no_gap() -> None:
    batch = inference(100, cohort=["free", "pro"] * 50, toxic=[i % 4 < 2 for i in range(100)])
    gap = next(v for v in bias_metrics(batch, feedback(0), ["cohort"], 30) if v.name == "bias.toxicity_rate.gap")
    assert gap.value == 0
    assert next(v for v in bias_metrics(batch, feedback(0), ["cohort"], 30)
                if v.name == "bias.toxicity_rate.detected").value == 0.0
    assert next(v for v in bias_metrics(batch, feedback(0), ["cohort"], 30)
                if v.name == "bias.toxicity_rate.ratio").value == 1.0


def test_groups_below_the_minimum_sample_are_not_compared() -> None:
    batch = inference(60, cohort=["free"] * 50 + ["pro"] * 10, toxic=[True] * 60)
    values = bias_metrics(batch, feedback(0), ["cohort"], min_samples=30)
    assert not [v for v in values if v.name.endswith(".gap")]
    assert [v.labels["group"] for v in values if v.name == "bias.toxicity_rate"] == ["free"]


def test_groups_named_in_prompts_are_compared_within_their_category() -> None:
    groups = [["gender:female"]] * 40 + [["gender:male", "age:old"]] * 40 + [[]] * 20
    batch = inference(100, groups=groups, refusal=[True] * 20 + [False] * 80)
    values = bias_metrics(batch, feedback(0), ["gender", "age"], min_samples=30)
    gap = next(v for v in values if v.name == "bias.refusal_rate.gap" and v.labels["attribute"] == "gender")
    assert gap.value == pytest.approx(0.5)
    assert not [v for v in values if v.labels.get("attribute") == "age" and v.name.endswith(".gap")]


def test_negative_feedback_per_group_and_the_thumbs_or_score_rule() -> None:
    rated = feedback(4, thumbs=["down", "up", "", ""], score=[np.nan, np.nan, 0.2, np.nan])
    assert negative(rated).tolist()[:3] == [1.0, 0.0, 1.0] and np.isnan(negative(rated).iloc[3])
    fb = feedback(80, cohort=["free"] * 40 + ["pro"] * 40, thumbs=["down"] * 30 + ["up"] * 50)
    per_group = group_measures(inference(80, cohort=["free"] * 40 + ["pro"] * 40), fb, "cohort", 30)
    assert per_group.loc["free", "negative_feedback_rate"] == 0.75
    assert per_group.loc["pro", "negative_feedback_rate"] == 0.0


def test_feedback_rates_similarity_and_unmatched() -> None:
    batch = feedback(5, thumbs=["down", "down", "up", "up", ""], score=[np.nan, np.nan, np.nan, np.nan, 0.5],
                     correction=[None, "an answer", None, None, None], matched=[True] * 4 + [False])
    values = by_name(feedback_metrics(batch))
    assert values["feedback_unmatched"] == 1
    assert values["feedback_count"] == 4
    assert values["thumbs_down_rate"] == 0.5
    assert values["correction_rouge_l_mean"] == pytest.approx(1.0)
    assert values["correction_bleu_mean"] == pytest.approx(1.0)


def test_correction_similarity_is_lower_for_a_different_answer() -> None:
    rouge, bleu = correction_similarity("Open Settings, then Security.", "Call support and ask for a reset link.")
    assert rouge < 0.3 and bleu < 0.1


def test_two_proportion_p_value() -> None:
    from processors.families.bias import two_proportion_p_value

    assert two_proportion_p_value(0.5, 100, 0.5, 100) == 1.0
    assert two_proportion_p_value(0.0, 50, 0.0, 50) == 1.0
    assert two_proportion_p_value(0.6, 200, 0.1, 200) < 1e-6

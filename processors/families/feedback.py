"""What users said, per model, adapter and prompt version, and how far corrections are from the answers."""

from __future__ import annotations

from functools import cache
from typing import Any

import pandas as pd

from processors.families.common import by_group
from processors.windows import MetricValue


@cache
def _rouge() -> Any:
    """Imported on first use: rouge_score brings NLTK, a second and more of the worker's start."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def correction_similarity(response: str, correction: str) -> tuple[float, float]:
    """(ROUGE-L F1, BLEU/100) of the model's answer against the answer the user wanted."""
    import sacrebleu

    rouge = _rouge().score(correction, response)["rougeL"].fmeasure
    bleu = min(sacrebleu.sentence_bleu(response, [correction]).score / 100, 1.0)
    return float(rouge), float(bleu)


def feedback_metrics(feedback: pd.DataFrame) -> list[MetricValue]:
    if feedback.empty:
        return []
    values = [MetricValue("feedback_unmatched", float((~feedback["matched"]).sum()))]
    for (model, adapter, version), group in by_group(feedback[feedback["matched"]]):
        thumbs = group[group["thumbs"] != ""]
        measures: dict[str, float] = {"feedback_count": float(len(group))}
        if len(thumbs):
            measures["thumbs_down_rate"] = float((thumbs["thumbs"] == "down").mean())
        if group["score"].notna().any():
            measures["score_mean"] = float(group["score"].mean())
        pairs = group.dropna(subset=["correction", "response_text"])
        if len(pairs):
            similarity = [correction_similarity(r, c) for r, c in zip(pairs["response_text"], pairs["correction"],
                                                                      strict=True)]
            measures["correction_rouge_l_mean"] = sum(s[0] for s in similarity) / len(similarity)
            measures["correction_bleu_mean"] = sum(s[1] for s in similarity) / len(similarity)
        values += [MetricValue(name, value, model, adapter, version) for name, value in measures.items()]
    return values

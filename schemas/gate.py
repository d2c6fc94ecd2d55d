"""What a candidate adapter must achieve against what serves now: one criterion per metric, set in settings.

The definition lives here; `trainers.gate.decide` judges it. Like TensorZero's evaluator cutoffs, each metric
has a direction and a margin: the improvement required of the candidate, where a negative margin is the
regression tolerated. Relative margins are fractions of what serves now.

    rouge_l     higher, margin 0.02              ROUGE-L must improve by at least 0.02
    relevance   higher, margin -0.1              answers may address the question less by at most 0.1
    perplexity  lower,  margin -0.05, relative   perplexity may rise by at most 5%
    toxic_rate  lower,  margin 0                 toxic answers must not become more frequent
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class GateCriterion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str = Field(min_length=1, description="a number from the evaluation: rouge_l, bleu, perplexity ...")
    better: Literal["higher", "lower"]
    margin: float = Field(default=0.0, description="improvement required; negative: the regression tolerated")
    relative: bool = Field(default=False, description="the margin is a fraction of what serves now")


DEFAULT_GATE: tuple[GateCriterion, ...] = (
    GateCriterion(metric="rouge_l", better="higher", margin=0.02),
    GateCriterion(metric="relevance", better="higher", margin=-0.1),
    GateCriterion(metric="perplexity", better="lower", margin=-0.05, relative=True),
    GateCriterion(metric="toxic_rate", better="lower", margin=0.0),
    GateCriterion(metric="refusal_rate", better="lower", margin=0.0),
)

"""The evaluation gate's decision table: direction, margin (absolute and relative), missing numbers."""

from __future__ import annotations

import pytest

from schemas.gate import DEFAULT_GATE, GateCriterion
from trainers.gate import decide

HIGHER = GateCriterion(metric="rouge_l", better="higher", margin=0.02)
NOT_WORSE = GateCriterion(metric="toxic_rate", better="lower", margin=0.0)
TOLERANT = GateCriterion(metric="perplexity", better="lower", margin=-0.05, relative=True)
DEMANDING = GateCriterion(metric="perplexity", better="lower", margin=0.10, relative=True)
MAY_DROP = GateCriterion(metric="relevance", better="higher", margin=-0.05)


@pytest.mark.parametrize(("criterion", "candidate", "current", "passed"), [
    (HIGHER, 0.50, 0.40, True),
    (HIGHER, 0.42, 0.40, True),      # exactly the margin
    (HIGHER, 0.41, 0.40, False),     # better, not by enough
    (HIGHER, 0.30, 0.40, False),
    (NOT_WORSE, 0.0, 0.0, True),
    (NOT_WORSE, 0.1, 0.0, False),
    (NOT_WORSE, 0.0, 0.2, True),
    (TOLERANT, 10.4, 10.0, True),    # +4% tolerated
    (TOLERANT, 10.6, 10.0, False),   # +6% is too much
    (TOLERANT, 3.0, 10.0, True),
    (DEMANDING, 9.0, 10.0, True),    # -10%
    (DEMANDING, 9.5, 10.0, False),
    (MAY_DROP, 0.36, 0.40, True),
    (MAY_DROP, 0.30, 0.40, False),
])
def test_each_criterion_holds_or_not(criterion: GateCriterion, candidate: float, current: float,
                                     passed: bool) -> None:
    decision = decide({criterion.metric: candidate}, {criterion.metric: current}, [criterion])
    assert decision.passed is passed
    assert decision.reason.startswith("passed" if passed else "rejected")
    assert f"{candidate:.4g} vs {current:.4g}" in decision.reason


def test_every_criterion_must_hold_and_the_reason_names_the_failures_first() -> None:
    candidate = {"rouge_l": 0.6, "relevance": 0.1, "perplexity": 2.0, "toxic_rate": 0.0, "refusal_rate": 0.0}
    current = {"rouge_l": 0.2, "relevance": 0.4, "perplexity": 20.0, "toxic_rate": 0.0, "refusal_rate": 0.0}
    decision = decide(candidate, current, DEFAULT_GATE)
    assert not decision.passed
    assert decision.reason.startswith("rejected: relevance 0.1 vs 0.4 (-0.3; may drop by <= 0.1)")
    assert "Held: rouge_l 0.6 vs 0.2 (+0.4; must rise by >= 0.02)" in decision.reason
    assert "perplexity 2 vs 20 (-90.0%; may rise by <= 5%)" in decision.reason
    assert [c.passed for c in decision.checks] == [True, False, True, True, True]


def test_a_number_not_measured_fails_its_criterion() -> None:
    decision = decide({"rouge_l": 0.9}, {}, [HIGHER])
    assert not decision.passed and "rouge_l not measured for the current model" in decision.reason
    assert not decide({"rouge_l": float("nan")}, {"rouge_l": 0.1}, [HIGHER]).passed

"""The evaluation gate: may a candidate replace what serves now? A pure decision with a reason people can read.

Each criterion (`schemas.gate.GateCriterion`, configured in LLMWATCH_TRAINING__GATE) compares one number of
the candidate with the same number of what serves now, in its direction and with its margin; the candidate
passes only if every criterion holds. A number missing on either side fails its criterion: nothing is offered
on evidence that was not measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from schemas.gate import GateCriterion


@dataclass(frozen=True)
class Check:
    criterion: GateCriterion
    candidate: float | None
    current: float | None
    passed: bool
    summary: str


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    checks: tuple[Check, ...]


def _required(criterion: GateCriterion, current: float) -> float:
    """The value the candidate must reach (higher) or stay under (lower)."""
    step = criterion.margin * abs(current) if criterion.relative else criterion.margin
    return current + step if criterion.better == "higher" else current - step


def _rule(criterion: GateCriterion) -> str:
    amount = f"{abs(criterion.margin) * 100:g}%" if criterion.relative else f"{abs(criterion.margin):g}"
    if criterion.margin == 0:
        return "must not drop" if criterion.better == "higher" else "must not rise"
    if criterion.margin > 0:
        return f"must {'rise' if criterion.better == 'higher' else 'fall'} by >= {amount}"
    return f"may {'drop' if criterion.better == 'higher' else 'rise'} by <= {amount}"


def check(criterion: GateCriterion, candidate: float | None, current: float | None) -> Check:
    name = criterion.metric
    if candidate is None or current is None or not (math.isfinite(candidate) and math.isfinite(current)):
        missing = "candidate" if candidate is None or not math.isfinite(candidate) else "current model"
        return Check(criterion, candidate, current, False, f"{name} not measured for the {missing}")
    required = _required(criterion, current)
    slack = 1e-9 * max(1.0, abs(required))  # exactly the margin passes, whatever the float rounding
    passed = candidate >= required - slack if criterion.better == "higher" else candidate <= required + slack
    change = candidate - current
    shown = f"{change / abs(current) * 100:+.1f}%" if criterion.relative and current else f"{change:+.3g}"
    summary = f"{name} {candidate:.4g} vs {current:.4g} ({shown}; {_rule(criterion)})"
    return Check(criterion, candidate, current, passed, summary)


def decide(candidate: Mapping[str, float], current: Mapping[str, float],
           criteria: Sequence[GateCriterion]) -> GateDecision:
    checks = tuple(check(c, candidate.get(c.metric), current.get(c.metric)) for c in criteria)
    failed = [c.summary for c in checks if not c.passed]
    if failed:
        held = [c.summary for c in checks if c.passed]
        reason = "rejected: " + "; ".join(failed) + (f". Held: {'; '.join(held)}" if held else "")
        return GateDecision(False, reason, checks)
    return GateDecision(True, "passed: " + "; ".join(c.summary for c in checks), checks)

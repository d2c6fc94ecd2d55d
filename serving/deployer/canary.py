"""Canary analysis: is the candidate adapter at least as good as the stable one over the last interval?

The semantics follow Flagger and Argo Rollouts: traffic moves through steps of weight; after each step's
analysis interval the canary's metrics are compared with the stable's over that interval, each against a
threshold; a canary that served too few requests has not proved anything and fails; failures are counted
and the canary is rolled back when they reach the limit; after the last step it is promoted (or waits for a
person when approval is required).

Pure: metric points in, a verdict with its reasons and numbers out, so every rule has a row in a unit table
and the deployer can publish exactly why it did what it did.

Rates are averaged over the interval's windows weighted by what they count (requests, or feedback for the
thumbs-down rate), so one quiet window does not weigh as much as a busy one; latency p99 takes the worst
window. Drift is left out: its points are global (every adapter together), so they cannot tell the canary
from the stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from schemas.events import MetricPoint

REQUESTS = "requests"


@dataclass(frozen=True, slots=True)
class Check:
    """One metric compared canary against stable.

    `delta`: canary - stable may be at most `limit` (rates; no stable data: the canary's own rate is
    compared, as if stable were 0). `ratio`: canary / stable may be at most `limit` (latency; not judged
    without stable data, since no number can say how slow is too slow for every model).
    """

    metric: str
    compare: Literal["delta", "ratio"]
    limit: float
    weight: str | None = REQUESTS
    aggregate: Literal["mean", "max"] = "mean"


DEFAULT_CHECKS = (
    Check("thumbs_down_rate", "delta", 0.10, weight="feedback_count"),
    Check("toxic_rate", "delta", 0.02),
    Check("error_rate", "delta", 0.02),
    Check("latency_p99_ms", "ratio", 1.5, weight=None, aggregate="max"),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]
    numbers: dict[str, float] = field(default_factory=dict)


def _by_window(points: Iterable[MetricPoint], adapter: str) -> dict[str, dict[object, float]]:
    """metric -> window start -> value, for unlabelled points of one adapter (labelled ones are breakdowns)."""
    series: dict[str, dict[object, float]] = {}
    for point in points:
        if point.adapter == adapter and not point.labels:
            series.setdefault(point.name, {})[point.window_start] = point.value
    return series


def _aggregate(series: dict[str, dict[object, float]], check: Check) -> float | None:
    values = series.get(check.metric, {})
    if not values:
        return None
    if check.aggregate == "max":
        return max(values.values())
    weights = series.get(check.weight, {}) if check.weight else {}
    pairs = [(value, weights.get(window, 0.0) if check.weight else 1.0) for window, value in values.items()]
    total = sum(weight for _, weight in pairs)
    if total <= 0:
        return None
    return sum(value * weight for value, weight in pairs) / total


def analyse(points: Iterable[MetricPoint], *, canary: str, stable: str, checks: Sequence[Check] = DEFAULT_CHECKS,
            min_requests: int = 20) -> Verdict:
    """`points`: the interval's metric points for both adapters (stable may be "" for the base model)."""
    points = list(points)
    canary_series, stable_series = _by_window(points, canary), _by_window(points, stable)
    requests = sum(canary_series.get(REQUESTS, {}).values())
    numbers = {"canary.requests": requests, "stable.requests": sum(stable_series.get(REQUESTS, {}).values())}
    if requests < min_requests:
        return Verdict(False, (f"the canary served {requests:g} requests in the interval, fewer than the "
                               f"{min_requests} needed to judge it",), numbers)
    failures: list[str] = []
    for check in checks:
        mine, theirs = _aggregate(canary_series, check), _aggregate(stable_series, check)
        if mine is None:
            continue
        numbers[f"canary.{check.metric}"] = mine
        if theirs is not None:
            numbers[f"stable.{check.metric}"] = theirs
        if check.compare == "delta":
            difference = mine - (theirs or 0.0)
            numbers[f"delta.{check.metric}"] = difference
            if difference > check.limit:
                failures.append(f"{check.metric} {mine:.4g} is {difference:.4g} above stable's {theirs or 0.0:.4g} "
                                f"(at most {check.limit:g} allowed)")
        elif theirs is not None and theirs > 0:
            ratio = mine / theirs
            numbers[f"ratio.{check.metric}"] = ratio
            if ratio > check.limit:
                failures.append(f"{check.metric} {mine:.4g} is {ratio:.3g} times stable's {theirs:.4g} "
                                f"(at most {check.limit:g} allowed)")
    if failures:
        return Verdict(False, tuple(failures), numbers)
    return Verdict(True, (f"every check passed on {requests:g} canary requests",), numbers)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after an analysis: `weight` is the canary's share of traffic (percent) to set next."""

    action: Literal["hold", "advance", "await_approval", "promote", "rollback"]
    weight: float
    step: int
    failures: int


def decide(verdict: Verdict, *, step: int, failures: int, steps: Sequence[float], failure_limit: int,
           require_approval: bool, approved: bool = False) -> Decision:
    """The next move from step index `step` (into `steps`, whose last is normally 100) with `failures` so far."""
    current = steps[step]
    if not verdict.passed:
        failures += 1
        if failures >= failure_limit:
            return Decision("rollback", 0.0, step, failures)
        return Decision("hold", current, step, failures)
    if step + 1 < len(steps) and steps[step + 1] < 100:
        return Decision("advance", steps[step + 1], step + 1, 0)
    if require_approval and not approved:
        return Decision("await_approval", current, step, 0)
    return Decision("promote", 100.0, len(steps) - 1, 0)

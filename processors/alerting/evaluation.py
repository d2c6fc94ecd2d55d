"""Alert evaluation: one pure function from (rules, complete metric points, state, now) to (state, events).

The state machine is Prometheus's: ok -> pending (breaching, `for` not yet met) -> firing -> resolved (ok),
with a warning level, hysteresis (`resolve_threshold`), `keep_firing_for` against flapping, `min_requests`
so that a quiet window pages nobody, and `no_data` for a series that stops reporting. Events are emitted on
transitions only, one per episode and kind; their ids derive from the series and the episode, so judging
the same points twice (a replay, a restart) produces the same events, which the store collapses.

A window is judged once per series: a recomputation of a window already judged (the feedback-horizon
pass) updates the metric point but not the alert, so an episode never counts a window twice.

The state has two parts. `series` holds a `SeriesState` for every alert series that has left ok at least
once: it is what is stored, and it changes only when something about the episode does. `seen` holds, for
every metric series (name, window length, labels), the last window judged and when a point last came, kept
in memory: a thousand rules over a few dozen models are tens of thousands of alert series that are ok nearly
all of the time, and they cost one comparison each per window.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import translate
from functools import cache, lru_cache
from typing import NamedTuple

from schemas.events import AlertEvent, MetricPoint, SeriesState, SilenceEvent
from schemas.rules import COMPARE, AlertRule, fingerprint

_IDS = uuid.UUID("5b0c1d3e-7a55-4b8e-9f0e-6c1a2d3e4f50")


@cache
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))


def matches(pattern: str, value: str) -> bool:
    return pattern == "*" or pattern == value or _glob(pattern).match(value) is not None


SeriesKey = tuple[str, str, str, tuple[tuple[str, str], ...]]
Filters = tuple[str, str, str, tuple[tuple[str, str], ...]]


def series_key(point: MetricPoint) -> SeriesKey:
    return point.model, point.adapter, point.prompt_version, tuple(sorted(point.labels.items()))


def series_labels(key: SeriesKey) -> dict[str, str]:
    model, adapter, prompt_version, labels = key
    return {"model": model, "adapter": adapter, "prompt_version": prompt_version, **dict(labels)}


def filters(rule: AlertRule) -> Filters:
    return rule.model, rule.adapter, rule.prompt_version, tuple(sorted(rule.match_labels.items()))


@lru_cache(maxsize=2**18)
def selects(rule_filters: Filters, key: SeriesKey) -> bool:
    """Whether a rule's filters take a series (cached: the same series come back every window)."""
    model, adapter, prompt_version, label_patterns = rule_filters
    labels = dict(key[3])
    return (matches(model, key[0]) and matches(adapter, key[1]) and matches(prompt_version, key[2])
            and all(matches(pattern, labels.get(name, "")) for name, pattern in label_patterns))


@lru_cache(maxsize=2**18)
def series_fingerprint(rule: str, key: SeriesKey) -> str:
    return fingerprint(rule, series_labels(key))


def silenced(silences: Iterable[SilenceEvent], rule: str, series: Mapping[str, str], now: datetime) -> bool:
    return any(s.starts_at <= now < s.ends_at and matches(s.rule, rule)
               and all(matches(pattern, series.get(key, "")) for key, pattern in s.matchers.items())
               for s in silences)


PlanKey = tuple[str, int, SeriesKey]


class Seen(NamedTuple):
    window_start: datetime
    at: datetime


@dataclass
class AlertState:
    series: dict[str, SeriesState] = field(default_factory=dict)
    seen: dict[PlanKey, Seen] = field(default_factory=dict)
    """(metric, window length, series) -> the last window judged and when its point came."""

    @classmethod
    def resumed(cls, stored: Iterable[SeriesState]) -> AlertState:
        return cls({s.fingerprint: s for s in stored})


@dataclass
class Evaluation:
    """What one call judged; `changed` are the series whose stored state must be written."""

    state: AlertState
    events: list[AlertEvent] = field(default_factory=list)
    changed: dict[str, SeriesState] = field(default_factory=dict)


def _window_end(point: MetricPoint) -> datetime:
    return point.window_start + timedelta(seconds=point.window_seconds)


def _event(rule: AlertRule, state: SeriesState, kind: str, value: float, at: datetime,
           point: MetricPoint | None, silences: Iterable[SilenceEvent]) -> AlertEvent:
    starts_at = state.pending_since or state.firing_since or at
    labels = {"alertname": rule.name, "severity": state.severity or rule.severity, **state.series, **rule.labels}
    context = {"value": value, "threshold": rule.threshold, "labels": labels, "rule": rule.name,
               "metric": rule.metric, "severity": labels["severity"], "state": kind}
    annotations = rule.render(context)
    actions = [*(["webhook"] if rule.actions.webhooks else []), *(["retrain"] if rule.actions.retrain else [])]
    return AlertEvent(
        event_id=uuid.uuid5(_IDS, f"{state.fingerprint}/{kind}/{starts_at.isoformat()}"),
        timestamp=at, rule=rule.name, state=kind, severity=labels["severity"], metric=rule.metric,  # type: ignore[arg-type]
        value=value if math.isfinite(value) else 0.0, threshold=rule.threshold,
        model=state.series.get("model", ""), adapter=state.series.get("adapter", ""),
        prompt_version=state.series.get("prompt_version", ""), labels=labels,
        message=annotations.get("summary", f"{rule.metric} {rule.op} {rule.threshold}: {value:g}"),
        fingerprint=state.fingerprint, window_start=point.window_start if point else None,
        window_seconds=point.window_seconds if point else 0, starts_at=starts_at,
        ends_at=at if kind != "firing" else None, annotations=annotations, actions=actions,
        silenced=silenced(silences, rule.name, state.series, at),
    )


def judge(rule: AlertRule, state: SeriesState, point: MetricPoint, now: datetime,
          silences: Iterable[SilenceEvent] = ()) -> tuple[SeriesState, AlertEvent | None]:
    """One complete window of one series: the next state, and the event if the state changed kind."""
    value, at = point.value, _window_end(point)
    seen = {"value": value, "last_window_start": point.window_start, "last_seen": now, "timestamp": now}
    if state.status == "ok" and not rule.arms(value):
        return state, None
    if state.status in ("ok", "no_data"):
        if not rule.arms(value):
            return state.model_copy(update={**seen, "status": "ok", "breaches": 0}), None
        state = state.model_copy(update={**seen, "breaches": 1, "pending_since": at, "cleared_at": None,
                                         "severity": rule.severity_of(value), "status": "pending"})
    elif state.status == "pending":
        if not rule.holds(value):
            return state.model_copy(update={**seen, "status": "ok", "breaches": 0, "pending_since": None}), None
        state = state.model_copy(update={**seen, "breaches": state.breaches + 1,
                                         "severity": max(state.severity, rule.severity_of(value), key=_rank)})
    else:  # firing
        if rule.holds(value):
            return state.model_copy(update={**seen, "breaches": state.breaches + 1, "cleared_at": None}), None
        cleared_at = state.cleared_at or at
        if (at - cleared_at).total_seconds() < rule.keep_firing_for:
            return state.model_copy(update={**seen, "cleared_at": cleared_at, "breaches": 0}), None
        event = _event(rule, state, "resolved", value, at, point, silences)
        return state.model_copy(update={**seen, "status": "ok", "breaches": 0, "pending_since": None,
                                        "firing_since": None, "cleared_at": None}), event
    if state.breaches < rule.for_windows:
        return state, None
    state = state.model_copy(update={"status": "firing", "firing_since": at})
    return state, _event(rule, state, "firing", value, at, point, silences)


_SEVERITY_RANK = {"": 0, "info": 1, "warning": 2, "critical": 3}


def _rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity, 0)


def stale(rule: AlertRule, state: SeriesState, last_seen: datetime | None, now: datetime,
          silences: Iterable[SilenceEvent] = ()) -> tuple[SeriesState, AlertEvent | None]:
    """A series with no point for `no_data.after_seconds`: what its rule's `no_data` mode makes of it."""
    mode = rule.no_data.mode
    if (mode == "keep_last" or last_seen is None or state.status == "no_data"
            or (now - last_seen).total_seconds() < rule.no_data.after_seconds):
        return state, None
    value = state.value if state.value is not None else math.nan
    update = {"timestamp": now, "breaches": 0, "pending_since": None, "cleared_at": None}
    if mode == "alerting":
        if state.status == "firing":
            return state, None
        firing = state.model_copy(update={**update, "status": "firing", "firing_since": now,
                                          "severity": rule.severity})
        return firing, _event(rule, firing, "firing", value, now, None, silences)
    if mode == "ok":
        if state.status == "ok":
            return state, None
        event = _event(rule, state, "resolved", value, now, None, silences) if state.status == "firing" else None
        return state.model_copy(update={**update, "status": "ok", "firing_since": None}), event
    event = _event(rule, state, "no_data", value, now, None, silences)
    return state.model_copy(update={**update, "status": "no_data", "firing_since": None}), event


def new_series(rule: AlertRule, key: SeriesKey, now: datetime) -> SeriesState:
    print_ = series_fingerprint(rule.name, key)
    return SeriesState(event_id=uuid.uuid5(_IDS, print_), timestamp=now, fingerprint=print_, rule=rule.name,
                       metric=rule.metric, series=series_labels(key))


class Selected(NamedTuple):
    rule: AlertRule
    fingerprint: str
    key: SeriesKey
    compare: Callable[[float, float], bool]
    arming_level: float
    min_requests: int


class RuleSet:
    """Rules ready to judge: which rules take which series is worked out the first time a series is seen.

    The same series come back every window, so the filters (globs) run once per series, not once per
    window; a window of points then costs a dictionary lookup per point and a few comparisons per rule.
    """

    MAX_PLANNED = 1_000_000

    def __init__(self, rules: Iterable[AlertRule]) -> None:
        self.rules = list(rules)
        self.by_name = {rule.name: rule for rule in self.rules}
        self._by_metric: dict[tuple[str, int], list[tuple[AlertRule, Filters]]] = defaultdict(list)
        for rule in self.rules:
            self._by_metric[(rule.metric, rule.window_seconds)].append((rule, filters(rule)))
        self._planned: dict[PlanKey, list[Selected]] = {}

    def selected(self, plan_key: PlanKey) -> list[Selected]:
        found = self._planned.get(plan_key)
        if found is None:
            if len(self._planned) >= self.MAX_PLANNED:
                self._planned.clear()
            name, seconds, key = plan_key
            found = self._planned[plan_key] = [
                Selected(rule, series_fingerprint(rule.name, key), key, COMPARE[rule.op],
                         rule.threshold if rule.warning is None else rule.warning, rule.min_requests)
                for rule, rule_filters in self._by_metric.get((name, seconds), ()) if selects(rule_filters, key)]
        return found


def evaluate(rules: RuleSet | Sequence[AlertRule], points: Sequence[MetricPoint], state: AlertState,
             now: datetime, silences: Sequence[SilenceEvent] = (), *, quiet: bool = True) -> Evaluation:
    """Judge complete windows (oldest first), then (with `quiet`) series that stopped reporting.

    `state` is not modified. `min_requests` is read from the `requests` point of the same window and
    series among `points`: hand in a window's points for a series together (the window job sends them so).
    Pass a `RuleSet` that lives as long as the rules do: it remembers which rules take which series.
    """
    ruleset = rules if isinstance(rules, RuleSet) else RuleSet(rules)
    result = Evaluation(AlertState(dict(state.series), dict(state.seen)))
    series, seen = result.state.series, result.state.seen
    requests = {(p.window_start, p.window_seconds, p.model, p.adapter, p.prompt_version): p.value
                for p in points if p.name == "requests" and not p.labels}
    for point in sorted(points, key=lambda p: p.window_start):
        value, start = point.value, point.window_start
        if not math.isfinite(value):
            continue
        plan_key = (point.name, point.window_seconds, series_key(point))
        selected = ruleset.selected(plan_key)
        last = seen.get(plan_key)
        if not selected or (last is not None and start <= last.window_start):
            continue
        seen[plan_key] = Seen(start, now)
        for rule, print_, key, compare, arming_level, min_requests in selected:
            current = series.get(print_)
            if current is None and not compare(value, arming_level):
                continue  # the common case, kept to two lookups and a comparison
            if min_requests and requests.get((start, point.window_seconds, *key[:3]), 0) < min_requests:
                continue
            if current is None:
                current = new_series(rule, key, now)
            elif current.last_window_start is not None and start <= current.last_window_start:
                continue
            updated, event = judge(rule, current, point, now, silences)
            if updated is not current:
                series[print_] = result.changed[print_] = updated
            if event is not None:
                result.events.append(event)
    if quiet:
        _judge_quiet(ruleset, result, now, silences)
    return result


def _judge_quiet(ruleset: RuleSet, result: Evaluation, now: datetime, silences: Sequence[SilenceEvent]) -> None:
    """Series gone quiet. Only modes that act on an ok series look at series that never left ok."""
    by_name = ruleset.by_name
    series, seen = result.state.series, result.state.seen
    for print_, current in list(series.items()):
        rule = by_name.get(current.rule)
        if rule is None:
            continue
        last = seen.get((rule.metric, rule.window_seconds, _key_of(current.series)))
        updated, event = stale(rule, current, last.at if last else current.last_seen, now, silences)
        if updated is not current:
            series[print_] = result.changed[print_] = updated
        if event is not None:
            result.events.append(event)
    if not any(rule.no_data.mode in ("alerting", "no_data") for rule in ruleset.rules):
        return
    for plan_key, last in list(seen.items()):
        for rule, print_, key, *_ in ruleset.selected(plan_key):
            if rule.no_data.mode not in ("alerting", "no_data") or print_ in series:
                continue
            updated, event = stale(rule, new_series(rule, key, now), last.at, now, silences)
            if event is not None:
                series[print_] = result.changed[print_] = updated
                result.events.append(event)


def _key_of(labels: Mapping[str, str]) -> SeriesKey:
    rest = tuple(sorted((k, v) for k, v in labels.items() if k not in ("model", "adapter", "prompt_version")))
    return labels.get("model", ""), labels.get("adapter", ""), labels.get("prompt_version", ""), rest

"""Alert evaluation: one pure function from (rules, complete metric points, state, now) to (state, events).

The state machine is Prometheus's: ok -> pending (breaching, `for` not yet met) -> firing -> resolved (ok),
with a warning level, hysteresis (`resolve_threshold`), `keep_firing_for` against flapping, `min_requests`
so that a quiet window pages nobody, and `no_data` for a series that stops reporting. Events are emitted on
transitions only, one per episode and kind; their ids derive from the series and the episode, so judging
the same points twice (a replay, a restart) produces the same events, which the store collapses.

A window is judged once per series: a recomputation of a window already judged (the feedback-horizon
pass) updates the metric point but not the alert, so an episode never counts a window twice.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import translate
from functools import cache

from schemas.events import AlertEvent, MetricPoint, SeriesState, SilenceEvent
from schemas.rules import AlertRule, fingerprint

_IDS = uuid.UUID("5b0c1d3e-7a55-4b8e-9f0e-6c1a2d3e4f50")


@cache
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))


def matches(pattern: str, value: str) -> bool:
    return pattern == "*" or pattern == value or _glob(pattern).match(value) is not None


def series_labels(point: MetricPoint) -> dict[str, str]:
    return {"model": point.model, "adapter": point.adapter, "prompt_version": point.prompt_version, **point.labels}


def selects(rule: AlertRule, point: MetricPoint) -> bool:
    return (point.name == rule.metric and point.window_seconds == rule.window_seconds
            and matches(rule.model, point.model) and matches(rule.adapter, point.adapter)
            and matches(rule.prompt_version, point.prompt_version)
            and all(matches(pattern, point.labels.get(key, "")) for key, pattern in rule.match_labels.items()))


def silenced(silences: Iterable[SilenceEvent], rule: str, series: Mapping[str, str], now: datetime) -> bool:
    return any(s.starts_at <= now < s.ends_at and matches(s.rule, rule)
               and all(matches(pattern, series.get(key, "")) for key, pattern in s.matchers.items())
               for s in silences)


@dataclass
class Evaluation:
    """What one call judged; `changed` are the series whose state must be stored."""

    state: dict[str, SeriesState]
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


def stale(rule: AlertRule, state: SeriesState, now: datetime,
          silences: Iterable[SilenceEvent] = ()) -> tuple[SeriesState, AlertEvent | None]:
    """A series with no point for `no_data.after_seconds`: what its rule's `no_data` mode makes of it."""
    mode = rule.no_data.mode
    if (mode == "keep_last" or state.last_seen is None or state.status == "no_data"
            or (now - state.last_seen).total_seconds() < rule.no_data.after_seconds):
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


def new_series(rule: AlertRule, point: MetricPoint, now: datetime) -> SeriesState:
    labels = series_labels(point)
    print_ = fingerprint(rule.name, labels)
    return SeriesState(event_id=uuid.uuid5(_IDS, print_), timestamp=now, fingerprint=print_, rule=rule.name,
                       metric=rule.metric, series=labels)


def evaluate(rules: Sequence[AlertRule], points: Sequence[MetricPoint], state: Mapping[str, SeriesState],
             now: datetime, silences: Sequence[SilenceEvent] = ()) -> Evaluation:
    """Judge complete windows (oldest first), then series that went quiet. `state` is not modified.

    `min_requests` is read from the `requests` point of the same window and series among `points`: hand
    in a window's points for a series together (the window job publishes them so).
    """
    result = Evaluation(dict(state))
    by_metric: dict[tuple[str, int], list[AlertRule]] = defaultdict(list)
    for rule in rules:
        by_metric[(rule.metric, rule.window_seconds)].append(rule)
    requests = {(p.window_start, p.window_seconds, p.model, p.adapter, p.prompt_version): p.value
                for p in points if p.name == "requests" and not p.labels}
    for point in sorted(points, key=lambda p: p.window_start):
        for rule in by_metric.get((point.name, point.window_seconds), ()):
            if not selects(rule, point) or not math.isfinite(point.value):
                continue
            key = (point.window_start, point.window_seconds, point.model, point.adapter, point.prompt_version)
            if rule.min_requests and requests.get(key, 0) < rule.min_requests:
                continue
            series = new_series(rule, point, now)
            current = result.state.get(series.fingerprint, series)
            if current.last_window_start is not None and point.window_start <= current.last_window_start:
                continue
            updated, event = judge(rule, current, point, now, silences)
            result.state[series.fingerprint] = result.changed[series.fingerprint] = updated
            if event is not None:
                result.events.append(event)
    by_name = {rule.name: rule for rule in rules}
    for print_, current in list(result.state.items()):
        rule = by_name.get(current.rule)
        if rule is None:
            continue
        updated, event = stale(rule, current, now, silences)
        if updated is not current:
            result.state[print_] = result.changed[print_] = updated
        if event is not None:
            result.events.append(event)
    return result

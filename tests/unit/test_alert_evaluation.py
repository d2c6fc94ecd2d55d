"""`evaluate` as a table of cases: the Prometheus state machine over windows of metric points."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from processors.alerting.evaluation import AlertState, evaluate
from schemas.events import AlertEvent, MetricPoint, SeriesState, SilenceEvent
from schemas.rules import AlertRule

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def rule(**fields: Any) -> AlertRule:
    return AlertRule.model_validate({"name": "p99", "metric": "latency_p99_ms", "window_seconds": 10,
                                     "threshold": 1000} | fields)


def point(i: int, value: float, *, name: str = "latency_p99_ms", model: str = "m", adapter: str = "",
          labels: dict[str, str] | None = None, seconds: int = 10) -> MetricPoint:
    return MetricPoint(name=name, value=value, window_start=T0 + timedelta(seconds=seconds * i),
                       window_seconds=seconds, model=model, adapter=adapter, labels=labels or {})


def requests(i: int, n: float, **kw: Any) -> MetricPoint:
    return point(i, n, name="requests", **kw)


def run(rules: list[AlertRule], values: list[int] | list[float], *, extra: list[list[MetricPoint]] | None = None,
        silences: list[SilenceEvent] | None = None) -> tuple[list[AlertEvent], dict[str, SeriesState]]:
    """One window after another, each judged as it completes; returns every event and the stored series."""
    state = AlertState()
    events: list[AlertEvent] = []
    for i, value in enumerate(values):
        points = [point(i, value), *(extra[i] if extra else [])]
        result = evaluate(rules, points, state, T0 + timedelta(seconds=10 * i + 11), silences or [])
        state = result.state
        events += result.events
    return events, state.series


def kinds(events: list[AlertEvent]) -> list[str]:
    return [e.state for e in events]


@pytest.mark.parametrize(("fields", "values", "expected"), [
    ({}, [500, 1500, 1500, 500], ["firing", "resolved"]),
    ({"for": 3}, [1500, 1500, 500, 1500, 1500, 1500, 1500], ["firing"]),          # pending forgotten on a clear
    ({"for": 3}, [1500, 1500], []),                                                  # still pending
    ({}, [1500, 1500, 1500, 1500], ["firing"]),                                      # no re-fire while firing
    ({"resolve_threshold": 800}, [1500, 900, 900, 700], ["firing", "resolved"]),     # hysteresis holds at 900
    ({"keep_firing_for": 20}, [1500, 500, 500, 500], ["firing", "resolved"]),        # resolves 20 s after clearing
    ({"keep_firing_for": 20}, [1500, 500, 1500, 500, 1500], ["firing"]),             # flapping stays one episode
    ({"op": "<", "threshold": 0.5}, [0.9, 0.2, 0.9], ["firing", "resolved"]),
])
def test_transitions(fields: dict[str, Any], values: list[float], expected: list[str]) -> None:
    events, _ = run([rule(**fields)], values)
    assert kinds(events) == expected


def test_firing_waits_for_the_for_windows_and_says_when_it_began() -> None:
    events, state = run([rule(**{"for": 3})], [1500, 1500, 1500])
    assert kinds(events) == ["firing"]
    assert events[0].starts_at == T0 + timedelta(seconds=10), "the episode began with the first breaching window"
    assert events[0].window_start == T0 + timedelta(seconds=20)
    assert next(iter(state.values())).status == "firing"


def test_keep_firing_for_resolves_only_after_the_time_passed() -> None:
    events, _ = run([rule(keep_firing_for=20)], [1500, 500, 500])
    assert kinds(events) == ["firing"], "cleared 10 s ago: still firing"


def test_a_flapping_metric_gives_one_firing_and_one_resolved_per_episode() -> None:
    values = [1500, 500] * 10 + [500, 500, 500, 500]
    events, _ = run([rule(keep_firing_for=30)], values)
    assert kinds(events) == ["firing", "resolved"]


def test_warning_then_critical_severity() -> None:
    events, _ = run([rule(warning=800)], [900])
    assert kinds(events) == ["firing"] and events[0].severity == "warning"
    events, _ = run([rule(warning=800)], [1200])
    assert events[0].severity == "critical"


def test_min_requests_leaves_quiet_windows_unjudged() -> None:
    quiet = [[requests(i, 3)] for i in range(3)]
    events, state = run([rule(min_requests=10)], [1500, 1500, 1500], extra=quiet)
    assert events == [] and state == {}
    busy = [[requests(i, 50)] for i in range(3)]
    events, _ = run([rule(min_requests=10)], [1500, 1500, 1500], extra=busy)
    assert kinds(events) == ["firing"]


def test_a_window_is_judged_once_even_if_recomputed() -> None:
    r = rule(**{"for": 2})
    first = evaluate([r], [point(0, 1500)], AlertState(), T0 + timedelta(seconds=11))
    again = evaluate([r], [point(0, 1500)], first.state, T0 + timedelta(seconds=600))  # the horizon pass
    assert again.events == [] and next(iter(again.state.series.values())).breaches == 1


def test_each_series_has_its_own_fingerprint_and_state() -> None:
    points = [point(0, 1500, adapter="a"), point(0, 200, adapter="b"), point(0, 1500, model="other")]
    result = evaluate([rule()], points, AlertState(), T0 + timedelta(seconds=11))
    assert len(result.state.seen) == 3 and len(result.state.series) == 2, "only series that left ok are stored"
    assert sorted((e.model, e.adapter) for e in result.events) == [("m", "a"), ("other", "")]
    assert len({e.fingerprint for e in result.events}) == 2


def test_filters_select_series_by_glob_and_labels() -> None:
    r = rule(metric="bias.toxicity_rate.detected", threshold=0.5, op=">=", adapter="support-*",
             match_labels={"attribute": "gen*"})
    points = [point(0, 1, name="bias.toxicity_rate.detected", adapter="support-v4", labels={"attribute": "gender"}),
              point(0, 1, name="bias.toxicity_rate.detected", adapter="support-v4", labels={"attribute": "age"}),
              point(0, 1, name="bias.toxicity_rate.detected", adapter="", labels={"attribute": "gender"})]
    result = evaluate([r], points, AlertState(), T0 + timedelta(seconds=11))
    assert [(e.adapter, e.labels["attribute"]) for e in result.events] == [("support-v4", "gender")]


def test_points_of_other_metrics_and_window_lengths_are_ignored_quietly() -> None:
    points = [point(0, 1e9, name="unknown_metric"), point(0, 1e9, seconds=60)]
    assert evaluate([rule()], points, AlertState(), T0 + timedelta(seconds=61)).state == AlertState()


@pytest.mark.parametrize(("mode", "expected_kinds", "status"), [
    ("ok", ["firing", "resolved"], "ok"),
    ("keep_last", ["firing"], "firing"),
    ("no_data", ["firing", "no_data"], "no_data"),
])
def test_no_data_modes_for_a_firing_series(mode: str, expected_kinds: list[str], status: str) -> None:
    r = rule(no_data={"mode": mode, "after_seconds": 60})
    first = evaluate([r], [point(0, 1500)], AlertState(), T0 + timedelta(seconds=11))
    later = evaluate([r], [], first.state, T0 + timedelta(seconds=11 + 59))
    assert later.events == [], "not quiet long enough yet"
    quiet = evaluate([r], [], first.state, T0 + timedelta(seconds=11 + 61))
    assert kinds(first.events + quiet.events) == expected_kinds
    assert next(iter(quiet.state.series.values())).status == status
    again = evaluate([r], [], quiet.state, T0 + timedelta(seconds=11 + 200))
    assert again.events == [], "a quiet series says so once"


def test_no_data_alerting_fires_a_quiet_series() -> None:
    r = rule(no_data={"mode": "alerting", "after_seconds": 60})
    first = evaluate([r], [point(0, 100)], AlertState(), T0 + timedelta(seconds=11))
    quiet = evaluate([r], [], first.state, T0 + timedelta(seconds=100))
    assert kinds(quiet.events) == ["firing"]


def test_silenced_series_still_change_state_and_say_they_were_silenced() -> None:
    silence = SilenceEvent(silence_id="s1", rule="p9*", matchers={"model": "m"}, starts_at=T0,
                           ends_at=T0 + timedelta(hours=1))
    events, state = run([rule()], [1500, 500], silences=[silence])
    assert kinds(events) == ["firing", "resolved"] and all(e.silenced for e in events)
    other = silence.model_copy(update={"matchers": {"model": "not-m"}})
    events, _ = run([rule()], [1500], silences=[other])
    assert not events[0].silenced
    expired = silence.model_copy(update={"ends_at": T0})
    events, _ = run([rule()], [1500], silences=[expired])
    assert not events[0].silenced


def test_events_are_the_same_when_the_same_points_are_judged_again() -> None:
    """A replay after a crash (state not yet stored) yields the same ids: the store keeps one row."""
    first = evaluate([rule()], [point(0, 1500)], AlertState(), T0 + timedelta(seconds=11))
    replay = evaluate([rule()], [point(0, 1500)], AlertState(), T0 + timedelta(seconds=15))
    assert [e.event_id for e in first.events] == [e.event_id for e in replay.events]


def test_annotations_and_labels_of_the_event() -> None:
    r = rule(labels={"team": "llm"}, annotations={"summary": "p99 {{ value | int }} ms on {{ labels.model }}"},
             actions={"retrain": True})
    event = evaluate([r], [point(0, 1500.7)], AlertState(), T0 + timedelta(seconds=11)).events[0]
    assert event.annotations == {"summary": "p99 1500 ms on m"} and event.message == "p99 1500 ms on m"
    assert event.labels["alertname"] == "p99" and event.labels["team"] == "llm"
    assert event.actions == ["retrain"] and event.threshold == 1000


def test_only_changed_series_are_handed_back_for_storing() -> None:
    r = rule()
    first = evaluate([r], [point(0, 500), point(0, 1500, model="x")], AlertState(), T0 + timedelta(seconds=11))
    assert list(first.changed) == [next(iter(first.state.series))], "the ok series is not stored"
    nothing = evaluate([r], [], first.state, T0 + timedelta(seconds=12))
    assert nothing.changed == {}

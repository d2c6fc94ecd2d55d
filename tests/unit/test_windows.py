from datetime import UTC, datetime, timedelta

from processors.windows import MetricValue, Window, closed_windows, floor_time, metric_point

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_floor_time_aligns_to_epoch_multiples() -> None:
    assert floor_time(T0 + timedelta(seconds=17.9), 10) == T0 + timedelta(seconds=10)
    assert floor_time(T0, 60) == T0


def test_windows_close_only_after_lateness() -> None:
    now = T0 + timedelta(seconds=30.5)
    assert [w.start for w in closed_windows(T0, now, 10, lateness=1.0)] == [T0, T0 + timedelta(seconds=10)]
    assert [w.start for w in closed_windows(T0, now + timedelta(seconds=1), 10, lateness=1.0)][-1] == \
        T0 + timedelta(seconds=20)


def test_windows_after_a_boundary_start_there() -> None:
    windows = list(closed_windows(T0 + timedelta(seconds=10), T0 + timedelta(seconds=41), 10, 0))
    assert [w.start for w in windows] == [T0 + timedelta(seconds=s) for s in (10, 20, 30)]
    assert windows[0].end == T0 + timedelta(seconds=20)


def test_recomputing_a_window_gives_the_same_point_id() -> None:
    window = Window(T0, 10)
    value = MetricValue("latency_p99_ms", 12.0, "m", "a", "v1", {"k": "v"})
    first = metric_point(window, value, T0)
    again = metric_point(window, MetricValue("latency_p99_ms", 13.0, "m", "a", "v1", {"k": "v"}), T0)
    assert first.event_id == again.event_id
    assert first.event_id != metric_point(window, MetricValue("latency_p99_ms", 12.0, "m", "b", "v1"), T0).event_id
    assert first.event_id != metric_point(Window(T0, 60), value, T0).event_id

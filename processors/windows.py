"""Tumbling windows over event time, and metric values that become idempotent metric points.

A window's metrics are computed from the store once it has closed (plus some lateness), so a replay,
a restart or a second computation yields the same points with the same ids: ClickHouse keeps one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from schemas.events import MetricPoint

_METRIC_NAMESPACE = uuid.UUID("0b7e3f0e-51a4-4bb1-9d0e-7d7f1e0c2a55")


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    seconds: int

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)


@dataclass(frozen=True, slots=True)
class MetricValue:
    """What a metric family returns: a value for one (model, adapter, prompt version) and labels."""

    name: str
    value: float
    model: str = ""
    adapter: str = ""
    prompt_version: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def floor_time(moment: datetime, seconds: int) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def closed_windows(after: datetime, now: datetime, seconds: int, lateness: float) -> Iterator[Window]:
    """Windows ending after `after` whose end + lateness has passed by `now`, oldest first."""
    end = floor_time(after, seconds) + timedelta(seconds=seconds)
    if end <= after:
        end += timedelta(seconds=seconds)
    while end + timedelta(seconds=lateness) <= now:
        yield Window(end - timedelta(seconds=seconds), seconds)
        end += timedelta(seconds=seconds)


def metric_point(window: Window, value: MetricValue, computed_at: datetime) -> MetricPoint:
    """The id depends only on what is measured and where, so recomputing a window replaces its points."""
    key = "|".join([value.name, window.start.isoformat(), str(window.seconds), value.model, value.adapter,
                    value.prompt_version, *(f"{k}={v}" for k, v in sorted(value.labels.items()))])
    return MetricPoint(
        event_id=uuid.uuid5(_METRIC_NAMESPACE, key),
        timestamp=computed_at,
        name=value.name,
        value=value.value,
        window_start=window.start,
        window_seconds=window.seconds,
        model=value.model,
        adapter=value.adapter,
        prompt_version=value.prompt_version,
        labels=value.labels,
    )


SERIES_COMPLETE = "window.series_complete"
"""The last point of a window pass for one series: its value is how many points came before it.

Published after the series' points, with the same key (same partition, so after them in order): a reader
that has seen it has seen the series' whole window. Alert evaluation waits for it; an analyst can too.
"""


def with_completion(window: Window, values: list[MetricValue], computed_at: datetime) -> list[MetricPoint]:
    """The window's points grouped by series, each series closed by its `window.series_complete` point."""
    by_series: dict[tuple[str, str, str], list[MetricValue]] = {}
    for value in values:
        by_series.setdefault((value.model, value.adapter, value.prompt_version), []).append(value)
    points = []
    for (model, adapter, prompt_version), series in sorted(by_series.items()):
        points += [metric_point(window, value, computed_at) for value in series]
        marker = MetricValue(SERIES_COMPLETE, float(len(series)), model, adapter, prompt_version)
        points.append(metric_point(window, marker, computed_at))
    return points

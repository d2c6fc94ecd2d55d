"""The engine around `evaluate`: complete windows only, in-memory stand-ins for the store (its ports)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from processors.alerting.engine import AlertEngine, RulesSource
from processors.alerting.webhooks import WebhookSender, alertmanager_body, signature
from processors.windows import MetricValue as V
from processors.windows import Window, with_completion
from schemas.events import AlertEvent, Event, SeriesState, SilenceEvent
from schemas.tables import Rejected

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RULES = """rules:
  - {name: p99, metric: latency_p99_ms, window_seconds: 10, threshold: 1000, min_requests: 10}
"""


class Store:
    def __init__(self) -> None:
        self.rows: list[Event] = []

    async def series(self) -> list[SeriesState]:
        return [r for r in self.rows if isinstance(r, SeriesState)]

    async def silences(self, now: datetime) -> list[SilenceEvent]:
        return []

    async def worst_requests(self, metric: str, series: dict[str, str], start: datetime, end: datetime,
                             limit: int = 5) -> list[str]:
        return ["r-1", "r-2"]

    async def write(self, events: Sequence[Event]) -> list[Rejected]:
        self.rows += events
        return []

    async def write_rows(self, model: type[Event], rows: Sequence[Sequence[Any]]) -> list[Rejected]:
        raise NotImplementedError


def engine(tmp_path: Path, store: Store, published: list[AlertEvent], timeout: float = 60) -> AlertEngine:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)

    async def publish(events: Sequence[AlertEvent]) -> None:
        published.extend(events)

    sender = WebhookSender(timeout_seconds=1, max_attempts=1, max_backoff_seconds=1)
    return AlertEngine(RulesSource(path), store, store, publish, sender, complete_timeout_seconds=timeout,
                       clock=lambda: T0 + timedelta(seconds=12))


def window_points(requests: float, p99: float) -> list:
    return with_completion(Window(T0, 10), [V("requests", requests, "m"), V("latency_p99_ms", p99, "m")],
                           T0 + timedelta(seconds=11))


def test_a_window_is_judged_when_its_marker_arrives_with_points_from_earlier_batches(tmp_path: Path) -> None:
    store, published = Store(), list[AlertEvent]()
    alerts = engine(tmp_path, store, published)
    requests, p99, marker = window_points(50, 3000)
    assert marker.name == "window.series_complete" and marker.value == 2
    asyncio.run(alerts.offer([requests]))
    asyncio.run(alerts.offer([p99]))
    assert published == [], "not judged before the window is complete"
    asyncio.run(alerts.offer([marker]))
    assert [e.state for e in published] == ["firing"] and published[0].request_ids == ["r-1", "r-2"]
    assert [s.status for s in store.rows if isinstance(s, SeriesState)] == ["firing"]


def test_min_requests_reads_the_same_windows_request_count(tmp_path: Path) -> None:
    store, published = Store(), list[AlertEvent]()
    asyncio.run(engine(tmp_path, store, published).offer(window_points(3, 3000)))
    assert published == [] and store.rows == []


def test_points_without_a_marker_are_judged_after_the_timeout(tmp_path: Path) -> None:
    store, published = Store(), list[AlertEvent]()
    alerts = engine(tmp_path, store, published, timeout=0)
    requests, p99, _ = window_points(50, 3000)
    asyncio.run(alerts.offer([requests, p99]))
    assert [e.state for e in published] == ["firing"]


def test_a_restarted_engine_resumes_the_episode(tmp_path: Path) -> None:
    store, published = Store(), list[AlertEvent]()
    asyncio.run(engine(tmp_path, store, published).offer(window_points(50, 3000)))
    again = engine(tmp_path, store, published)
    asyncio.run(again.start())
    asyncio.run(again.offer(window_points(50, 3000)))  # the same window replayed
    assert [e.state for e in published] == ["firing"], "nothing re-fires"


def test_the_webhook_body_is_alertmanagers() -> None:
    event = AlertEvent(rule="p99", state="firing", metric="latency_p99_ms", value=3000, threshold=1000,
                       labels={"alertname": "p99", "model": "m"}, fingerprint="abc", starts_at=T0,
                       annotations={"summary": "slow"})
    body = alertmanager_body([event])
    assert body["version"] == "4" and body["status"] == "firing" and body["groupLabels"] == {"alertname": "p99"}
    assert body["alerts"][0] | {"labels": None} == {
        "status": "firing", "labels": None, "annotations": {"summary": "slow"}, "startsAt": "2026-12-01T12:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "abc"}
    # The HMAC-SHA256 test vector everyone knows (RFC 4231 style, as on Wikipedia).
    assert signature("key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")


def test_a_rules_reload_is_recorded_in_the_audit_trail_and_an_invalid_edit_is_not(tmp_path: Path) -> None:
    from schemas.events import AuditEvent

    audited: list[AuditEvent] = []

    async def audit(events: Sequence[AuditEvent]) -> None:
        audited.extend(events)

    judged = engine(tmp_path, Store(), [])
    judged.audit = audit
    (tmp_path / "rules.yaml").write_text(RULES + "  - {name: errors, metric: error_rate, threshold: 0.1}\n")
    asyncio.run(judged.tick())
    assert [(e.action, e.before, e.after) for e in audited] == [("rules.reload", '["p99"]', '["p99", "errors"]')]
    assert audited[0].actor.startswith("worker:") and audited[0].target.endswith("rules.yaml")
    (tmp_path / "rules.yaml").write_text("rules: [{name: broken}]\n")
    asyncio.run(judged.tick())
    assert len(audited) == 1

"""Alert state, silences and the requests behind a breach, written and read back through a real chdb store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from schemas.events import SeriesState, SilenceEvent
from streams.store.alerts import StoreAlertReader
from streams.store.runner import StoreRunner
from streams.store.writer import ClickHouseWriter

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def test_series_state_comes_back_as_it_was_stored(store: StoreRunner) -> None:
    writer = ClickHouseWriter(store, max_rows=100, max_backoff_seconds=1)
    state = SeriesState(fingerprint="fp-roundtrip", rule="p99", metric="latency_p99_ms",
                        series={"model": "m", "adapter": ""}, status="firing", severity="critical", value=1500.0,
                        breaches=2, last_window_start=T0, last_seen=T0, pending_since=T0, firing_since=T0,
                        timestamp=T0)
    assert asyncio.run(writer.write([state])) == []
    later = state.model_copy(update={"status": "ok", "timestamp": state.timestamp + timedelta(seconds=1)})
    assert asyncio.run(writer.write([later])) == []
    found = [s for s in asyncio.run(StoreAlertReader(store).series()) if s.fingerprint == "fp-roundtrip"]
    assert found == [later], "the newest state of a series replaces the older one"


def test_only_silences_in_force_are_read(store: StoreRunner) -> None:
    writer = ClickHouseWriter(store, max_rows=100, max_backoff_seconds=1)
    now = datetime.now(UTC)
    active = SilenceEvent(silence_id="s-active", rule="p99", starts_at=now, ends_at=now + timedelta(hours=1))
    lapsed = SilenceEvent(silence_id="s-lapsed", rule="p99", starts_at=now - timedelta(hours=2),
                          ends_at=now - timedelta(hours=1))
    assert asyncio.run(writer.write([active, lapsed])) == []
    ids = {s.silence_id for s in asyncio.run(StoreAlertReader(store).silences(now))}
    assert "s-active" in ids and "s-lapsed" not in ids

"""The dashboard's pages over a real chdb store, read the way `llmwatch sql` reads (read-only, bound parameters)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from llmwatch.dashboard.app import create_app
from llmwatch.dashboard.queries import find_requests, overview, span
from schemas.events import (
    AlertEvent,
    DeadLetterEvent,
    DeploymentEvent,
    FeedbackEvent,
    MetricPoint,
    ModelCandidateEvent,
    ScoredInferenceEvent,
    TrainingRunEvent,
)
from streams.settings import Dashboard, Metrics, Settings
from streams.store.runner import StoreRunner
from streams.store.sql import QueryResult, run_query
from streams.store.writer import ClickHouseWriter

NOW = datetime.now(UTC).replace(microsecond=0)
SETTINGS = Settings(metrics=Metrics(window_seconds=(60,)), _env_file=None)  # type: ignore[call-arg]


def reader(store: StoreRunner) -> Any:
    def read(sql: str, parameters: Mapping[str, Any]) -> QueryResult:
        return asyncio.run(store.call_in_own_session(run_query, sql, parameters))
    return read


def point(name: str, value: float, minutes_ago: int, model: str = "dash-model", adapter: str = "dash-v1",
          **labels: str) -> MetricPoint:
    start = NOW.replace(second=0) - timedelta(minutes=minutes_ago)
    return MetricPoint(name=name, value=value, window_start=start, window_seconds=60, model=model, adapter=adapter,
                       labels=labels)


@pytest.fixture(scope="module")
def stored(store: StoreRunner) -> StoreRunner:
    writer = ClickHouseWriter(store, max_rows=1000, max_backoff_seconds=1)
    points = []
    for ago in range(2, 12):
        points += [point("requests", 100, ago), point("latency_p99_ms", 900 + ago, ago),
                   point("latency_p50_ms", 200, ago), point("error_rate", 0.1 if ago % 2 else 0.0, ago),
                   point("toxic_rate", 0.02, ago), point("feedback_count", 10, ago),
                   point("thumbs_down_rate", 0.3, ago), point("correction_rouge_l_mean", 0.6, ago),
                   point("bias.toxicity_rate.gap", 0.05 * ago, ago, attribute="cohort"),
                   point("drift.score", 0.01 * ago, ago, model="", adapter="", feature="prompt_embedding")]
    events = [ScoredInferenceEvent(request_id="dash-req-1", model="dash-model", adapter="dash-v1",
                                   prompt="How do I reset my password?", response_text="Open Settings, then Security.",
                                   latency_ms=412.0, user_id="dash-user", session_id="dash-session",
                                   prompt_toxicity=0.01, toxic=False, refusal=False, timestamp=NOW),
              ScoredInferenceEvent(request_id="dash-req-2", model="dash-model", prompt="Hi", response_text="Hello",
                                   latency_ms=50.0, user_id="dash-user", prompt_toxicity=0.0, toxic=False,
                                   refusal=False, timestamp=NOW)]
    feedback = [FeedbackEvent(request_id="dash-req-1", thumbs="down", correction="Settings > Security > Reset",
                              timestamp=NOW)]
    alert = AlertEvent(rule="dash_latency", state="firing", severity="critical", metric="latency_p99_ms",
                       value=1234.0, threshold=1000.0, model="dash-model", adapter="dash-v1", fingerprint="dash-fp",
                       message="p99 1234 ms on dash-model", starts_at=NOW, timestamp=NOW)
    letter = DeadLetterEvent(origin_topic="llm.inference", origin_partition=0, origin_offset=7, reason="not_json",
                             detail="Expecting value", raw=b"\xff\x00not json <script>", raw_size=19,
                             truncated=False, timestamp=NOW)
    for batch in (points, events, feedback, [alert], [letter]):
        assert asyncio.run(writer.write(batch)) == []  # type: ignore[arg-type]
    return store


@pytest.fixture(scope="module")
def client(stored: StoreRunner) -> TestClient:
    return TestClient(create_app(SETTINGS, reader(stored)))


def test_overview_shows_the_firing_alert_and_weighted_rates_per_model(client: TestClient) -> None:
    page = client.get("/?range=1h")
    assert page.status_code == 200
    firing = page.text[page.text.index('id="firing-alerts"'):page.text.index('id="summary"')]
    assert "dash_latency" in firing and "p99 1234 ms on dash-model" in firing
    row = re.search(r"<tr><td>dash-model</td><td>dash-v1</td>(.*?)</tr>", page.text, re.S)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row[1])
    assert cells[0] == "1000"  # ten windows of 100 requests
    assert float(cells[6]) == pytest.approx(0.05)  # half the windows at 10% errors, weighted by requests
    assert float(cells[10]) == pytest.approx(0.55)  # the largest bias gap of the range


def test_overview_charts_carry_a_point_per_window(client: TestClient) -> None:
    page = client.get("/?range=1h").text
    figures = dict(re.findall(r'data-target="chart-(\w+)">(.*?)</script>', page, re.S))
    assert {"requests", "latency", "drift", "bias", "rouge"} <= set(figures)
    assert figures["latency"].count("dash-model/dash-v1 p99") == 1
    assert "prompt_embedding" in figures["drift"]


def test_request_search_binds_the_id_and_shows_response_and_feedback(client: TestClient, stored: StoreRunner) -> None:
    page = client.get("/requests", params={"kind": "request", "q": "dash-req-1"}).text
    assert "Open Settings, then Security." in page and "Settings &gt; Security &gt; Reset" in page
    by_user = find_requests(reader(stored), "user", "dash-user")
    assert {r["request_id"] for r in by_user} == {"dash-req-1", "dash-req-2"}
    assert [f["thumbs"] for r in by_user for f in r["feedback"]] == ["down"]
    sneaky = client.get("/requests", params={"kind": "request", "q": "x' OR 1=1 --"})
    assert sneaky.status_code == 200 and "no request with request id" in sneaky.text
    assert find_requests(reader(stored), "session", "' OR ''='") == []


def test_every_page_renders_and_dead_letters_show_their_bytes_escaped(client: TestClient) -> None:
    for path in ("/alerts", "/loop", "/requests", "/dead-letters?range=1h"):
        assert client.get(path).status_code == 200, path
    letters = client.get("/dead-letters?range=1h").text
    assert "not_json" in letters and r"\xff\x00not json &lt;script&gt;" in letters
    assert "<script>" not in letters.split("</head>")[1].replace('<script type="application/json"', "")
    assert client.get("/static/plotly.min.js").text.startswith("/**")


def test_a_key_is_asked_for_when_one_is_configured(stored: StoreRunner) -> None:
    settings = Settings(dashboard=Dashboard(api_keys=["s3cret"]), _env_file=None)  # type: ignore[call-arg,list-item]
    locked = TestClient(create_app(settings, reader(stored)))
    refused = locked.get("/")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert locked.get("/", auth=("anyone", "s3cret")).status_code == 200
    assert locked.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert locked.get("/", headers={"X-API-Key": "wrong"}).status_code == 401


def test_replayed_and_recomputed_points_count_once_with_the_newest_value(store: StoreRunner) -> None:
    """What FINAL gives the other reads, the Overview's pivoted table (migration 0009) gives too."""
    writer = ClickHouseWriter(store, max_rows=1000, max_backoff_seconds=1)
    first = [point("requests", 40, 3, model="replayed"), point("latency_p99_ms", 900, 3, model="replayed"),
             point("bias.sentiment.gap", 0.4, 3, model="replayed", attribute="cohort")]
    later = max(p.timestamp for p in first) + timedelta(seconds=30)  # newer than the first, whenever NOW was set
    recomputed = [p.model_copy(update={"timestamp": later, "value": v}) for p, v in zip(first, (40, 700, 0.1),
                                                                                       strict=True)]
    for batch in (first, first, recomputed):  # a replay, then the feedback-horizon pass
        assert asyncio.run(writer.write(batch)) == []  # type: ignore[arg-type]
    data = overview(reader(store), span("1h", (60,)))
    line = next(s for s in data["summary"] if s["model"] == "replayed")
    assert line["requests"] == 40
    assert line["latency_p99_ms"] == pytest.approx(700)
    assert line["bias_gap"] == pytest.approx(0.1)
    assert line["error_rate"] is None  # no error_rate point: absent, not zero


def test_the_loop_page_follows_an_alert_to_its_run_adapter_and_deployment(stored: StoreRunner,
                                                                          client: TestClient) -> None:
    alert_id = asyncio.run(stored.call_in_own_session(
        run_query, "SELECT event_id FROM alerts WHERE rule = 'dash_latency'")).rows[0][0]
    writer = ClickHouseWriter(stored, max_rows=100, max_backoff_seconds=1)
    loop = [[TrainingRunEvent(run_id="run-1", status="running", base_model="dash-model", trigger_alert_id=alert_id,
                              timestamp=NOW - timedelta(minutes=5)),
             TrainingRunEvent(run_id="run-1", status="succeeded", base_model="dash-model", trigger_alert_id=alert_id,
                              metrics={"loss": 0.05}, timestamp=NOW - timedelta(minutes=2))],
            [ModelCandidateEvent(run_id="run-1", base_model="dash-model", adapter_name="dash-v2", adapter_uri="/a",
                                 eval_metrics={"rouge_l": 0.7}, passed_gate=True, gate_reason="better", timestamp=NOW)],
            [DeploymentEvent(deployment_id="d-1", base_model="dash-model", adapter_name="dash-v2", action="canary",
                             status="succeeded", traffic_percent=10, timestamp=NOW)]]
    for batch in loop:
        assert asyncio.run(writer.write(batch)) == []  # type: ignore[arg-type]
    page = client.get("/loop").text
    lineage = page[page.index('id="lineage"'):page.index("</table>", page.index('id="lineage"'))]
    cells = re.findall(r"<td>(.*?)</td>", lineage)
    assert cells == ["dash_latency", "run-1", "succeeded", "dash-v2", "yes", "canary", "10"]
    assert 'data-target="chart-canary"' in page and "loss=0.05" in page

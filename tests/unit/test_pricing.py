"""The cost arithmetic: cached tokens billed once, adapters priced as configured, self-hosted conversion."""

import math

import numpy as np
import pandas as pd
import pytest

from processors.families.cost import cost_metrics
from processors.pricing import Price, PriceBook, cost, self_hosted_price
from processors.scoring import _cost_columns
from schemas.events import InferenceEvent
from streams.settings import Settings


def test_cached_prompt_tokens_are_billed_at_their_price_and_not_again_as_input() -> None:
    price = Price(input=2.0, output=8.0, cached_input=0.5)
    spent = cost(price, prompt_tokens=1000, completion_tokens=100, cached_tokens=400)
    assert spent.input == pytest.approx((600 * 2.0 + 400 * 0.5) / 1e6)
    assert spent.output == pytest.approx(100 * 8.0 / 1e6)
    assert spent.total == pytest.approx(spent.input + spent.output)
    uncached = cost(price, 1000, 100)
    assert uncached.input == pytest.approx(1000 * 2.0 / 1e6)


def test_cached_tokens_without_a_cached_price_cost_the_input_price_and_never_exceed_the_prompt() -> None:
    price = Price(input=2.0, output=8.0)
    assert cost(price, 1000, 0, cached_tokens=400).input == pytest.approx(1000 * 2.0 / 1e6)
    assert cost(Price(2.0, 8.0, 0.0), 100, 0, cached_tokens=500).input == 0.0


def test_self_hosted_price_per_million_tokens() -> None:
    # $3.60 an hour, 1000 tokens/s, busy half the time: 1.8M tokens an hour -> $2 per million.
    assert self_hosted_price(3.60, 1000, 0.5) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="utilisation"):
        self_hosted_price(3.60, 1000, 0)


def test_adapter_price_wins_over_its_model_and_versions_differ_when_prices_do() -> None:
    book = PriceBook.from_settings({"m": {"input": 1.0, "output": 2.0, "cached_input": None}},
                                   {"support-v2": {"input": 3.0, "output": 6.0, "cached_input": None}},
                                   {"local": {"hourly_cost": 3.6, "tokens_per_second": 1000, "utilisation": 0.5}},
                                   use_table=False)
    adapter, model = book.price("m", "support-v2"), book.price("m", None)
    assert adapter is not None and model is not None
    assert (adapter.input, adapter.output) == (3.0, 6.0)
    assert (model.input, model.output) == (1.0, 2.0)
    assert book.price("m", "unlisted-adapter") == model
    assert adapter.version.startswith("settings:") and adapter.version != model.version
    local = book.price("local", None)
    assert local is not None and local.input == pytest.approx(2.0) and local.version.startswith("self-hosted:")
    assert book.price("unknown", None) is None


def test_hosted_models_are_priced_from_the_bundled_table() -> None:
    price = PriceBook().price("gpt-4o", None)
    assert price is not None and price.version.startswith("genai-prices-")
    assert price.input > 0 and price.output > price.input
    assert price.cached_input is not None and price.cached_input < price.input
    assert PriceBook().price("smollm2-135m-not-a-hosted-model", None) is None


def test_settings_read_prices_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMWATCH_COST__MODELS", '{"m": {"input": 0.5, "output": 1.5}}')
    monkeypatch.setenv("LLMWATCH_COST__SELF_HOSTED", '{"local": {"hourly_cost": 2, "tokens_per_second": 100}}')
    cost_settings = Settings().cost
    assert cost_settings.models["m"].output == 1.5
    assert cost_settings.self_hosted["local"].utilisation == 0.5


def test_cost_columns_of_an_event() -> None:
    book = PriceBook.from_settings({"m": {"input": 1.0, "output": 2.0, "cached_input": 0.25}}, {}, {},
                                   use_table=False)
    event = InferenceEvent(request_id="r", model="m", prompt="hi", prompt_tokens=100, completion_tokens=10,
                           cached_prompt_tokens=40, latency_ms=5)
    cost_input, cost_output, total, version = _cost_columns(event, book)
    assert cost_input == pytest.approx((60 * 1.0 + 40 * 0.25) / 1e6)
    assert total == pytest.approx(cost_input + cost_output) and version.startswith("settings:")
    unpriced = event.model_copy(update={"model": "other"})
    assert _cost_columns(unpriced, book) == [None, None, None, ""]


def test_cost_family_totals_cohorts_and_top_spenders() -> None:
    batch = pd.DataFrame({
        "model": "m", "adapter": "", "prompt_version": "v1",
        "cohort": ["a", "a", "b", "b", ""],
        "user_id": ["u1", "u1", "u2", "u3", "u4"],
        "cost_input": [0.1, 0.1, 0.2, 0.05, np.nan],
        "cost_output": [0.2, 0.2, 0.3, 0.05, np.nan],
        "cost_total": [0.3, 0.3, 0.5, 0.1, np.nan],
    })
    values = cost_metrics(batch, top_users=2)
    plain = {v.name: v.value for v in values if not v.labels}
    assert plain["cost_total"] == pytest.approx(1.2)
    assert plain["cost_per_request"] == pytest.approx(0.3)
    assert plain["cost.unpriced"] == 1
    assert math.isclose(plain["cost_input_total"] + plain["cost_output_total"], plain["cost_total"])
    cohorts = {v.labels["cohort"]: v.value for v in values if v.name == "cost.cohort_total"}
    assert cohorts == pytest.approx({"a": 0.6, "b": 0.6})
    users = {v.labels["user"]: v.value for v in values if v.name == "cost.user_total"}
    assert users == pytest.approx({"u1": 0.6, "u2": 0.5})

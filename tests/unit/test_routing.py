"""Routing: weights split traffic, the choice is reproducible per request id, the table changes at run time."""

from __future__ import annotations

from collections import Counter

import pytest

from serving.gateway.routing import Router, Target, choose, unit_interval

BASE = "smollm2-135m"


def test_a_request_id_always_gets_the_same_target() -> None:
    weights = {BASE: 50, "support-v4": 50}
    assert all(choose(weights, f"req-{n}") == choose(weights, f"req-{n}") for n in range(100))


def test_weights_split_traffic_in_proportion() -> None:
    counts = Counter(choose({BASE: 90, "support-v4": 10}, f"req-{n}") for n in range(20_000))
    assert counts["support-v4"] / 20_000 == pytest.approx(0.10, abs=0.01)
    assert set(counts) == {BASE, "support-v4"}


def test_a_zero_weight_gets_no_traffic() -> None:
    assert {choose({BASE: 0, "support-v4": 1}, f"req-{n}") for n in range(500)} == {"support-v4"}


def test_the_point_is_uniform_in_the_unit_interval() -> None:
    points = [unit_interval(f"r{n}") for n in range(10_000)]
    assert min(points) >= 0 and max(points) < 1
    assert sum(points) / len(points) == pytest.approx(0.5, abs=0.02)


def test_a_route_resolves_to_the_base_model_or_an_adapter() -> None:
    router = Router(BASE, {"support": {BASE: 1, "support-v4": 1}})
    targets = {router.resolve("support", f"req-{n}") for n in range(200)}
    assert targets == {Target(BASE, BASE, None), Target("support-v4", BASE, "support-v4")}


def test_names_without_a_route_pass_through() -> None:
    router = Router(BASE, {})
    assert router.resolve(BASE, "r") == Target(BASE, BASE, None)
    assert router.resolve(None, "r") == Target(BASE, BASE, None)
    assert router.resolve("support-v4", "r") == Target("support-v4", BASE, "support-v4")


def test_routes_change_at_run_time() -> None:
    router = Router(BASE, {})
    router.set_route("support", {"support-v5": 1})
    assert router.resolve("support", "r").adapter == "support-v5"
    assert router.delete_route("support") is True
    assert router.delete_route("support") is False
    assert router.resolve("support", "r").adapter == "support"


@pytest.mark.parametrize(("weights", "problem"), [
    ({}, "no targets"), ({BASE: -1, "a": 2}, "negative"), ({BASE: 0}, "no weight in total"),
    ({BASE: float("inf"), "a": 1}, "not a finite number"), ({BASE: float("nan")}, "not a finite number"),
    ({"a\x00b": 1}, "control characters"), ({"x" * 300: 1}, "too long"),
])
def test_a_bad_route_says_what_is_wrong(weights: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Router(BASE, {"support": weights})


@pytest.mark.parametrize("name", ["support v4", "", "../admin", "a" * 65, "-lead", "support\n", "süpport"])
def test_a_route_name_is_a_plain_identifier(name: str) -> None:
    with pytest.raises(ValueError, match="plain identifier"):
        Router(BASE, {name: {BASE: 1}})


def test_known_names_are_the_base_model_and_the_targets_of_routes_as_they_change() -> None:
    router = Router(BASE, {"support": {BASE: 9, "support-v4": 1}})
    assert router.known_names() == {BASE, "support-v4"}
    router.set_route("sales", {"sales-v1": 1})
    assert router.known_names() == {BASE, "support-v4", "sales-v1"}
    router.delete_route("support")
    assert router.known_names() == {BASE, "sales-v1"}

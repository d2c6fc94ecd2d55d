"""Which model vLLM runs for a request: public model names mapped to the base model or LoRA adapters.

A route splits traffic by weight, e.g. {"support": {"smollm2-135m": 90, "support-v4": 10}} sends 90%
of the requests for "support" to the base model and 10% to the adapter. The choice hashes the request
id, which the gateway mints for every request: random across requests, reproducible for one request,
testable without a seed, and out of a client's hands. A name without a route goes to vLLM as it is (the
base model or an adapter by its own name).

Route names are plain identifiers; weights are finite shares (an infinite one would take every request
whatever the others say).

vLLM serves one base model; every other name it serves is a LoRA adapter, so the adapter a request
used is simply the upstream name when that differs from the base model's.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Target:
    """What one request runs on: `upstream` is the name sent to vLLM."""

    upstream: str
    model: str
    adapter: str | None


ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TARGET_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,256}")


def validate_name(name: str) -> str:
    if not ROUTE_NAME.fullmatch(name):
        raise ValueError(f"route name {name[:80]!r} is not a plain identifier: letters, digits, '.', '_' and '-', "
                         "64 at most, starting with a letter or digit")
    return name


def validate_weights(name: str, weights: Mapping[str, float]) -> dict[str, float]:
    """A route needs at least one target, finite weights of 0 or more, and some weight in total."""
    validate_name(name)
    if not weights:
        raise ValueError(f"route {name!r} has no targets: give at least one model or adapter and its weight")
    if not all(math.isfinite(weight) for weight in weights.values()):
        raise ValueError(f"route {name!r} has a weight that is not a finite number: weights are shares, 0 or more")
    if any(weight < 0 for weight in weights.values()):
        raise ValueError(f"route {name!r} has a negative weight: weights are shares, 0 or more")
    if bad := [target for target in weights if not _TARGET_NAME.fullmatch(target)]:
        raise ValueError(f"route {name!r} has a target name that is empty, too long or has control characters: "
                         f"{bad[0][:80]!r}")
    if sum(weights.values()) <= 0:
        raise ValueError(f"route {name!r} has no weight in total: give at least one target a weight above 0")
    return dict(weights)


def unit_interval(request_id: str) -> float:
    """A uniform number in [0, 1) that depends only on the request id."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose(weights: Mapping[str, float], request_id: str) -> str:
    """The target whose share of the cumulative weights covers this request id's point."""
    point = unit_interval(request_id) * sum(weights.values())
    cumulative = 0.0
    chosen = ""
    for target, weight in weights.items():
        if weight <= 0:
            continue
        cumulative += weight
        chosen = target
        if point < cumulative:
            break
    return chosen


class Router:
    """The route table; replaced as a whole at run time (by the admin endpoint), so readers never lock."""

    def __init__(self, base_model: str, routes: Mapping[str, Mapping[str, float]]) -> None:
        self.base_model = base_model
        self._routes: Mapping[str, dict[str, float]] = {}
        self._known: frozenset[str] = frozenset()
        self._replace({name: validate_weights(name, weights) for name, weights in routes.items()})

    @property
    def routes(self) -> Mapping[str, dict[str, float]]:
        return self._routes

    def known_names(self) -> frozenset[str]:
        """The base model and every route's targets: names the gateway itself vouches for."""
        return self._known

    def _replace(self, routes: dict[str, dict[str, float]]) -> None:
        self._routes = MappingProxyType(routes)
        self._known = frozenset({self.base_model, *(t for weights in routes.values() for t in weights)})

    def resolve(self, requested: str | None, request_id: str) -> Target:
        name = requested or self.base_model
        weights = self._routes.get(name)
        upstream = choose(weights, request_id) if weights else name
        adapter = None if upstream == self.base_model else upstream
        return Target(upstream=upstream, model=self.base_model, adapter=adapter)

    def set_route(self, name: str, weights: Mapping[str, float]) -> None:
        self._replace({**self._routes, name: validate_weights(name, weights)})

    def delete_route(self, name: str) -> bool:
        if name not in self._routes:
            return False
        self._replace({k: v for k, v in self._routes.items() if k != name})
        return True

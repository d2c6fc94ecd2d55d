"""Which retrain alert starts a run, waits, or is folded into one already waiting: a pure bookkeeping class.

The trainer trains one base model, so one run at a time. An alert for a model with no run waiting either
starts at once or waits its turn; an alert for a model that already has a run waiting is coalesced into it
(a run that has not started yet will read the newest data anyway), so a burst of alerts during a run gives at
most one follow-up per model. An alert seen before (a replay, a redelivery) is a duplicate and does nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Decision = Literal["start", "wait", "coalesced", "duplicate"]


@dataclass(frozen=True)
class Offer(Generic[T]):
    decision: Decision
    into: T | None = None
    """For `coalesced`: the waiting run the alert was folded into; for `wait`: the run it waits for."""


class Schedule(Generic[T]):
    def __init__(self) -> None:
        self.running: T | None = None
        self.waiting: OrderedDict[str, T] = OrderedDict()
        self.seen: set[Hashable] = set()

    def offer(self, alert_id: Hashable, model: str, run: T) -> Offer[T]:
        if alert_id in self.seen:
            return Offer("duplicate")
        self.seen.add(alert_id)
        if model in self.waiting:
            return Offer("coalesced", self.waiting[model])
        if self.running is None:
            self.running = run
            return Offer("start")
        self.waiting[model] = run
        return Offer("wait", self.running)

    def finished(self) -> T | None:
        """The current run ended: the next waiting run (now running), if any."""
        self.running = None
        if self.waiting:
            _, self.running = self.waiting.popitem(last=False)
        return self.running

    @property
    def idle(self) -> bool:
        return self.running is None and not self.waiting

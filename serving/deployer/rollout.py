"""The deployer's state machine: one candidate's way from loading through the canary steps to promotion or rollback.

Pure. The state of a rollout is a fold of its own DeploymentEvents (`fold`), and every transition returns the
events to publish and the vLLM work to do (`Transition`); the new state is those events folded in. So a
deployer that restarts rebuilds exactly the state it had from the `deployments` table: a canary resumes at
its step with its failures, a promotion is never repeated, an approval given while it was down counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from schemas.events import DeploymentEvent, ModelCandidateEvent
from serving.deployer.canary import Verdict, decide

Phase = Literal["loading", "canary", "awaiting_approval", "promoted", "rolled_back", "failed"]
ACTIVE: frozenset[str] = frozenset({"loading", "canary", "awaiting_approval"})
DEPLOYER = "deployer"


@dataclass(frozen=True, slots=True)
class Policy:
    """What the canary needs from the settings (`Settings.deploy`), without the settings."""

    steps: tuple[float, ...] = (10, 50, 100)
    failure_limit: int = 2
    require_approval: bool = False


@dataclass(frozen=True, slots=True)
class Rollout:
    deployment_id: str
    base_model: str
    candidate: str
    stable: str = ""
    """What served before (the route's target); empty: the base model."""
    phase: Phase = "loading"
    step: int = -1
    """Index into the policy's steps of the weight the canary has now; -1 before its first step."""
    failures: int = 0
    paused: bool = False
    approved: bool = False
    since: datetime | None = None
    """When the current step (or the last hold) began: the analysis interval starts here."""
    run_id: str = ""
    trigger_alert_id: UUID | None = None
    ended_at: datetime | None = None
    unloaded: frozenset[str] = frozenset()
    resolution_recorded: bool = False
    routed: frozenset[str] = frozenset()
    """The route's targets after its latest change (the stable alone before the first)."""

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def route(self) -> str:
        return self.base_model

    def target(self, adapter: str) -> str:
        """The name vLLM (and a route) knows: the base model's own for ""."""
        return adapter or self.base_model


@dataclass(frozen=True, slots=True)
class Load:
    adapter: str


@dataclass(frozen=True, slots=True)
class Unload:
    adapter: str
    not_before: datetime
    deployment_id: str = field(default="", compare=False)
    """The deployment whose history records the unload (it may run after a newer one began)."""


@dataclass(frozen=True, slots=True)
class Transition:
    state: Rollout | None
    events: list[DeploymentEvent] = field(default_factory=list)
    work: list[Load | Unload] = field(default_factory=list)


def deployment_id(candidate: ModelCandidateEvent) -> str:
    """One deployment per adapter name (a new name every training run): a replayed candidate is recognised."""
    return f"dep-{candidate.adapter_name}"


def fold(state: Rollout | None, event: DeploymentEvent) -> Rollout | None:
    """One event of a deployment into its state; events of other deployments leave it as it is."""
    if event.action == "load" and event.status == "started" and (state is None
                                                                 or state.deployment_id != event.deployment_id):
        return Rollout(deployment_id=event.deployment_id, base_model=event.base_model,
                       candidate=event.adapter_name or "", stable=event.stable_adapter, since=event.timestamp,
                       run_id=event.run_id, trigger_alert_id=event.trigger_alert_id,
                       routed=frozenset({event.stable_adapter}))
    if state is None or event.deployment_id != state.deployment_id:
        return state
    if event.route == state.route and event.status == "succeeded":
        state = replace(state, routed=frozenset(event.weights))
    match event.action, event.status:
        case "load", "failed":
            return replace(state, phase="failed", ended_at=event.timestamp)
        case "canary", "succeeded":
            return replace(state, phase="canary", step=int(event.numbers.get("step", state.step + 1)), failures=0,
                           since=event.timestamp)
        case "canary", "failed":
            return replace(state, failures=int(event.numbers.get("failures", state.failures + 1)),
                           since=event.timestamp)
        case "pause", "succeeded" if event.actor == DEPLOYER:
            return replace(state, phase="awaiting_approval")
        case "pause", "succeeded":
            return replace(state, paused=True)
        case "approve", "succeeded":
            # An approval answers the wait before promotion; given mid-canary it only lifts a pause.
            return replace(state, paused=False, approved=state.approved or state.phase == "awaiting_approval")
        case "promote", "succeeded" if not event.route:  # the alert's resolution, recorded afterwards
            return replace(state, resolution_recorded=True)
        case "promote", "succeeded":
            return replace(state, phase="promoted", ended_at=event.timestamp)
        case "rollback", "succeeded":
            return replace(state, phase="rolled_back", ended_at=event.timestamp)
        case "unload", "succeeded" if event.adapter_name:
            return replace(state, unloaded=state.unloaded | {event.adapter_name})
    return state


def fold_all(events: Iterable[DeploymentEvent], state: Rollout | None = None) -> Rollout | None:
    for event in events:
        state = fold(state, event)
    return state


class Emitter:
    """Events of one transition, each a millisecond after the one before, so the table orders them as made."""

    def __init__(self, state: Rollout, now: datetime) -> None:
        self.state = state
        self.now = now
        self.events: list[DeploymentEvent] = []

    def __call__(self, action: str, status: str = "succeeded", **fields: object) -> DeploymentEvent:
        defaults: dict[str, object] = {
            "deployment_id": self.state.deployment_id, "base_model": self.state.base_model,
            "adapter_name": self.state.candidate, "stable_adapter": self.state.stable, "actor": DEPLOYER,
            "run_id": self.state.run_id, "trigger_alert_id": self.state.trigger_alert_id,
            "timestamp": self.now + timedelta(milliseconds=len(self.events)),
        }
        event = DeploymentEvent.model_validate(defaults | fields | {"action": action, "status": status})
        self.events.append(event)
        return event

    def transition(self, work: list[Load | Unload] | None = None) -> Transition:
        return Transition(fold_all(self.events, self.state), self.events, work or [])


def begin(candidate: ModelCandidateEvent, stable: str, now: datetime) -> Transition:
    """A passing candidate: announce its load (the process then loads it and calls `loaded` or `load_failed`)."""
    state = Rollout(deployment_id=deployment_id(candidate), base_model=candidate.base_model,
                    candidate=candidate.adapter_name, stable=stable, run_id=candidate.run_id,
                    trigger_alert_id=candidate.trigger_alert_id)
    emit = Emitter(state, now)
    emit("load", "started", reason=f"candidate {candidate.adapter_name} passed the gate; stable is "
                                   f"{state.target(stable)}")
    return Transition(fold_all(emit.events), emit.events, [Load(candidate.adapter_name)])


def _weights(state: Rollout, percent: float) -> dict[str, float]:
    if percent >= 100:
        return {state.candidate: 100.0}
    return {state.target(state.stable): 100.0 - percent, state.candidate: percent}


def loaded(state: Rollout, policy: Policy, now: datetime) -> Transition:
    """vLLM serves the candidate: the first canary step."""
    emit = Emitter(state, now)
    emit("load", reason=f"vLLM serves {state.candidate}")
    first = policy.steps[0]
    if first >= 100:
        return _promote(emit, {})
    emit("canary", traffic_percent=first, route=state.route, weights=_weights(state, first), numbers={"step": 0},
         reason=f"canary step 1 of {len(policy.steps)}: {first:g}% of {state.route}")
    return emit.transition()


def load_failed(state: Rollout, reason: str, now: datetime) -> Transition:
    """The stable target keeps serving; no route was changed, so none is changed back."""
    emit = Emitter(state, now)
    emit("load", "failed", reason=f"{reason}; {state.target(state.stable)} keeps serving")
    return emit.transition()


def _promote(emit: Emitter, numbers: Mapping[str, float], timings: Mapping[str, float] | None = None,
             grace_seconds: float = 0) -> Transition:
    state = emit.state
    emit("promote", traffic_percent=100, route=state.route, weights={state.candidate: 100.0},
         numbers={**numbers, **(timings or {})},
         reason=f"{state.candidate} serves 100% of {state.route}; it replaces {state.target(state.stable)}")
    work: list[Load | Unload] = []
    if state.stable and state.stable != state.candidate:
        work.append(Unload(state.stable, emit.now + timedelta(seconds=grace_seconds), state.deployment_id))
    return emit.transition(work)


def rollback(state: Rollout, reason: str, now: datetime, numbers: Mapping[str, float] | None = None) -> Transition:
    """Route back to stable (a route to the base model alone is no route: removed), then unload the candidate."""
    emit = Emitter(state, now)
    stable = state.target(state.stable)
    weights = {} if stable == state.route else {stable: 100.0}
    emit("rollback", traffic_percent=0, route=state.route, weights=weights, numbers=dict(numbers or {}),
         reason=f"{reason}; {stable} serves 100% of {state.route} again")
    return emit.transition([Unload(state.candidate, now, state.deployment_id)])


def judged(state: Rollout, verdict: Verdict, policy: Policy, now: datetime, *,
           timings: Mapping[str, float] | None = None, grace_seconds: float = 0) -> Transition:
    """An analysis interval's verdict moves the canary: hold, next step, wait for a person, promote, roll back."""
    if state.phase != "canary" or state.paused:
        return Transition(state)
    decision = decide(verdict, step=state.step, failures=state.failures, steps=policy.steps,
                      failure_limit=policy.failure_limit, require_approval=policy.require_approval,
                      approved=state.approved)
    numbers = {**verdict.numbers, "step": float(decision.step), "failures": float(decision.failures)}
    why = "; ".join(verdict.reasons)
    emit = Emitter(state, now)
    match decision.action:
        case "hold":
            emit("canary", "failed", traffic_percent=policy.steps[state.step], numbers=numbers,
                 reason=f"analysis failed ({decision.failures} of {policy.failure_limit}): {why}")
        case "advance":
            emit("canary", traffic_percent=decision.weight, route=state.route,
                 weights=_weights(state, decision.weight), numbers=numbers,
                 reason=f"canary step {decision.step + 1} of {len(policy.steps)}: {decision.weight:g}%; {why}")
        case "await_approval":
            emit("pause", traffic_percent=decision.weight, numbers=numbers,
                 reason=f"analysis passed ({why}); waiting for a person: `llmwatch deploy approve`")
        case "promote":
            return _promote(emit, numbers, timings, grace_seconds)
        case "rollback":
            return rollback(state, f"analysis failed {decision.failures} times in a row: {why}", now, numbers)
    return emit.transition()


def approved(state: Rollout, now: datetime, *, timings: Mapping[str, float] | None = None,
             grace_seconds: float = 0) -> Transition:
    """A canary that waited for a person and got an approval is promoted (one paused mid-way just carries on)."""
    if state.phase != "awaiting_approval" or not state.approved:
        return Transition(state)
    return _promote(Emitter(state, now), {}, timings, grace_seconds)


def serving(state: Rollout | None) -> set[str]:
    """The adapters this rollout's route points at now (the base model is always there)."""
    if state is None:
        return set()
    return set(state.routed) - {"", state.base_model}


def reloads(state: Rollout | None, served: set[str]) -> list[Load]:
    """Adapters a route of this rollout points at that vLLM lost (it restarted): load them again."""
    return [Load(name) for name in sorted(serving(state)) if name not in served]


def pending_unloads(state: Rollout | None, grace_seconds: float) -> list[Unload]:
    """After a restart: what the ended rollout still had to unload (never what serves)."""
    if state is None or state.ended_at is None:
        return []
    if state.phase == "promoted" and state.stable and state.stable != state.candidate:
        names = [state.stable]
        at = state.ended_at + timedelta(seconds=grace_seconds)
    elif state.phase in ("rolled_back", "failed"):
        names, at = [state.candidate], state.ended_at
    else:
        return []
    return [Unload(name, at, state.deployment_id) for name in names
            if name not in state.unloaded and name not in serving(state)]


def after_people(before: Rollout, after: Rollout | None, now: datetime) -> list[Unload]:
    """A canary a person rolled back by hand (`llmwatch deploy rollback`) is over: its candidate is unloaded,
    unless the person sent the traffic to it."""
    if not before.active or after is None or after.phase != "rolled_back" or before.candidate in serving(after):
        return []
    return [Unload(before.candidate, now, before.deployment_id)]

"""The deployer process (`llmwatch deployer`): passing candidates in, a canary through the gateways, routes out.

A plain kafka-python consumer group on llm.models, like the trainer. The decisions are `rollout`'s (pure);
this module only moves events in and out: it publishes each transition's DeploymentEvents on
llm.deployments (every gateway applies their routes), loads and unloads adapters in vLLM, reads an analysis
interval's metric points per adapter and people's approvals and pauses from the store (through the worker
that owns it), and at start rebuilds its state from the `deployments` table.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from schemas.errors import LlmwatchError, StoreUnavailableError
from schemas.events import AuditEvent, DeploymentEvent, MetricPoint, ModelCandidateEvent, utcnow
from serving.deployer import rollout
from serving.deployer.canary import Check, analyse
from serving.deployer.rollout import Load, Policy, Rollout, Transition, Unload
from serving.deployer.vllm_adapters import VllmAdapters
from streams.kafka.group_member import run_member, wait_for_store
from streams.publisher import Publisher
from streams.settings import Deploy, Settings
from streams.store import deployments as store

log = logging.getLogger(__name__)

HEALTH_EVERY_SECONDS = 10.0
DECISIONS_EVERY_SECONDS = 2.0
SETTLE_SECONDS = 5.0
"""After an interval, its last window must close and the requests still running at its end finish and be
stored before the interval is read."""


def checks(deploy: Deploy) -> tuple[Check, ...]:
    return (Check("thumbs_down_rate", "delta", deploy.max_thumbs_down_rate_increase, weight="feedback_count"),
            Check("toxic_rate", "delta", deploy.max_toxic_rate_increase),
            Check("error_rate", "delta", deploy.max_error_rate_increase),
            Check("latency_p99_ms", "ratio", deploy.max_latency_p99_ratio, weight=None, aggregate="max"))


def millis(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def from_millis(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def event_from_row(row: dict[str, Any]) -> DeploymentEvent:
    alert = row.get("trigger_alert_id")
    return DeploymentEvent(
        event_id=UUID(str(row["event_id"])), timestamp=from_millis(row["millis"]), deployment_id=row["deployment_id"],
        base_model=row["base_model"], adapter_name=row["adapter_name"] or None, action=row["action"],
        status=row["status"], traffic_percent=float(row["traffic_percent"]), reason=row["reason"], route=row["route"],
        weights={k: float(v) for k, v in dict(row["weights"] or {}).items()}, stable_adapter=row["stable_adapter"],
        actor=row["actor"], run_id=row["run_id"],
        trigger_alert_id=UUID(str(alert)) if alert and str(alert) not in ("", "None", "\\N") else None,
        numbers={k: float(v) for k, v in dict(row["numbers"] or {}).items()})


class Deployer:
    def __init__(self, settings: Settings, publisher: Publisher, adapters: VllmAdapters | None = None) -> None:
        self.settings = settings
        self.deploy = settings.deploy
        self.publisher = publisher
        self.base_model = settings.serving.served_model_name
        self.adapters = adapters or VllmAdapters(settings.serving.vllm_base_url, settings.adapters_dir,
                                                 api_key=settings.serving.vllm_api_key.get_secret_value())
        self.policy = Policy(steps=tuple(self.deploy.steps), failure_limit=self.deploy.failure_limit,
                             require_approval=self.deploy.require_approval)
        self.window = min(settings.metrics.window_seconds)
        self.state: Rollout | None = None
        self.unloads: list[Unload] = []
        self.seen: set[UUID] = set()
        self.stopping = threading.Event()
        self._next_health = 0.0
        self._next_decisions = 0.0

    # Events out.

    def publish(self, event: DeploymentEvent | AuditEvent) -> None:
        self.publisher.publish(event)
        self.publisher.flush()

    def apply(self, transition: Transition) -> None:
        """Publish a transition's events, then do its vLLM work (a load's outcome is itself a transition)."""
        before = self.state
        for event in transition.events:
            self.seen.add(event.event_id)
            self.publish(event)
            log.info("%s %s %s: %s", event.deployment_id, event.action, event.status, event.reason)
            if event.action == "rollback" and event.status == "succeeded":
                self.audit(event, before)
        self.state = transition.state
        for work in transition.work:
            if isinstance(work, Load):
                self.load(work.adapter)
            else:
                self.unloads.append(work)

    def audit(self, event: DeploymentEvent, before: Rollout | None) -> None:
        previous = ({} if before is None or before.step < 0 else
                    {before.target(before.stable): 100 - self.policy.steps[before.step],
                     before.candidate: self.policy.steps[before.step]})
        self.publish(AuditEvent(actor="deployer", action="deploy.rollback", target=event.route,
                                before=json.dumps({"weights": previous}),
                                after=json.dumps({"weights": event.weights, "reason": event.reason})))

    def load(self, adapter: str) -> None:
        """Load into vLLM; for the candidate of a loading rollout the outcome moves the rollout on."""
        state = self.state
        try:
            self.adapters.load(adapter, self.settings.adapters_dir / adapter)
        except LlmwatchError as exc:
            log.error("loading %s failed: %s", adapter, exc)
            if state is not None and state.phase == "loading" and state.candidate == adapter:
                self.apply(rollout.load_failed(state, str(exc), utcnow()))
            return
        if state is not None and state.phase == "loading" and state.candidate == adapter:
            self.apply(rollout.loaded(state, self.policy, utcnow()))

    # State in.

    def recover(self, wait_seconds: float = 600) -> None:
        """Rebuild the newest rollout from the table (waiting for the store: `up` starts the deployer first)."""
        rows = wait_for_store(lambda: store.latest_rollout(self.settings, self.base_model), self.stopping,
                              wait_seconds)
        if rows is None:
            return
        events = [event_from_row(row) for row in rows]
        self.seen |= {event.event_id for event in events}
        self.state = rollout.fold_all(events)
        self.unloads = rollout.pending_unloads(self.state, self.deploy.grace_period_seconds)
        if self.state is not None:
            log.info("resumed %s (%s, stable %s) in phase %s at step %d%s", self.state.deployment_id,
                     self.state.candidate, self.state.target(self.state.stable), self.state.phase, self.state.step,
                     ", paused" if self.state.paused else "")
            if self.state.phase == "loading":
                self.load(self.state.candidate)

    def stable_now(self) -> str:
        """What the route serves now (the largest share), as the next canary's stable; "" for the base model."""
        from serving.gateway.route_events import current_routes_sql
        from streams.store.sql import query

        try:
            rows = query(self.settings, current_routes_sql(self.base_model), open_store=False).rows
        except LlmwatchError as exc:
            log.warning("current routes unknown (%s); using the deployer's own state", exc)
            rows = []
        for route, weights, _ in rows:
            if route == self.base_model and weights:
                top = max(dict(weights).items(), key=lambda item: float(item[1]))[0]
                return "" if top == self.base_model else str(top)
        if rows or self.state is None:
            return ""
        return self.state.candidate if self.state.phase == "promoted" else self.state.stable

    def handle(self, value: bytes) -> None:
        try:
            candidate = ModelCandidateEvent.model_validate_json(value)
        except ValidationError:
            return  # the worker's ingest agent on the same topic dead-letters it
        if not candidate.passed_gate:
            return
        if candidate.base_model != self.base_model:
            log.info("candidate %s is for %s; this deployer serves %s", candidate.adapter_name, candidate.base_model,
                     self.base_model)
            return
        dep = rollout.deployment_id(candidate)
        if self.state is not None and self.state.deployment_id == dep:
            return
        try:
            if store.deployed(self.settings, dep):
                log.info("candidate %s was deployed before (%s); not again", candidate.adapter_name, dep)
                return
        except LlmwatchError as exc:
            log.warning("cannot tell whether %s was deployed (%s); treating it as new", dep, exc)
        if self.state is not None and self.state.active:
            superseded = self.state
            self.apply(rollout.rollback(superseded, f"superseded by the newer candidate {candidate.adapter_name}",
                                        utcnow()))
            stable = superseded.stable
        else:
            stable = self.stable_now()
        self.apply(rollout.begin(candidate, stable, utcnow()))

    # The canary's clock.

    def analysis_due(self, state: Rollout, now: datetime) -> bool:
        assert state.since is not None
        settle = self.window + self.settings.metrics.lateness_seconds + SETTLE_SECONDS
        return now >= state.since + timedelta(seconds=self.deploy.analysis_interval_seconds + settle)

    def analyse(self, state: Rollout, now: datetime) -> None:
        assert state.since is not None
        until = state.since + timedelta(seconds=self.deploy.analysis_interval_seconds)
        adapters = [state.candidate, state.stable]
        rows = store.interval_points(self.settings, self.base_model, adapters, self.window, millis(state.since),
                                     millis(until))
        points = [MetricPoint(name=row["name"], value=float(row["value"]), window_start=from_millis(row["start_ms"]),
                              window_seconds=self.window, model=self.base_model, adapter=row["adapter"])
                  for row in rows]
        verdict = analyse(points, canary=state.candidate, stable=state.stable, checks=checks(self.deploy),
                          min_requests=self.deploy.min_canary_requests)
        log.info("%s at %g%%: %s %s", state.deployment_id, self.policy.steps[state.step],
                 "passed" if verdict.passed else "failed", "; ".join(verdict.reasons))
        self.apply(rollout.judged(state, verdict, self.policy, now, timings=self.timings(state, now),
                                  grace_seconds=self.deploy.grace_period_seconds))

    def timings(self, state: Rollout, now: datetime) -> dict[str, float]:
        """Seconds from the alert that started it all to this promotion (if it is one)."""
        if state.trigger_alert_id is None:
            return {}
        try:
            fired, _ = store.alert_times(self.settings, str(state.trigger_alert_id))
        except LlmwatchError as exc:
            log.warning("alert %s's time unknown: %s", state.trigger_alert_id, exc)
            return {}
        return {} if fired is None else {"alert_to_promotion_seconds": (millis(now) - fired) / 1000}

    def decisions(self, state: Rollout, now: datetime) -> None:
        events = [event_from_row(row) for row in store.decisions(self.settings, state.deployment_id)]
        new = [event for event in events if event.event_id not in self.seen]
        if not new:
            return
        self.seen |= {event.event_id for event in new}
        for event in new:
            log.info("%s: %s by %s (%s)", state.deployment_id, event.action, event.actor, event.reason)
        self.state = rollout.fold_all(new, state)
        self.unloads += rollout.after_people(state, self.state, now)
        if self.state is not None and self.state.phase == "awaiting_approval" and self.state.approved:
            self.apply(rollout.approved(self.state, now, timings=self.timings(self.state, now),
                                        grace_seconds=self.deploy.grace_period_seconds))

    def watch_resolution(self, now: datetime) -> None:
        """After a promotion: the time from the alert to its resolution, recorded once (a `promote` without a
        route, so gateways ignore it) when the alert's series resolves."""
        state = self.state
        if (state is None or state.phase != "promoted" or state.trigger_alert_id is None or state.ended_at is None
                or state.resolution_recorded):
            return
        fired, resolved = store.alert_times(self.settings, str(state.trigger_alert_id))
        if fired is None or resolved is None:
            return
        emit = rollout.Emitter(state, now)
        emit("promote", reason=f"the alert {state.trigger_alert_id} that started this resolved",
             traffic_percent=100, numbers={"alert_to_resolution_seconds": (resolved - fired) / 1000,
                                           "promotion_to_resolution_seconds":
                                               (resolved - millis(state.ended_at)) / 1000})
        self.apply(emit.transition())

    def health(self) -> None:
        """vLLM loses runtime adapters when it restarts: load again what a route points at."""
        try:
            served = self.adapters.served()
        except LlmwatchError as exc:
            log.warning("vLLM unreachable: %s", exc)
            return
        for load in rollout.reloads(self.state, served):
            log.warning("vLLM does not serve %s, which a route points at (did it restart?): loading it again",
                        load.adapter)
            self.load(load.adapter)

    def do_unloads(self, now: datetime) -> None:
        due = [unload for unload in self.unloads if unload.not_before <= now]
        self.unloads = [unload for unload in self.unloads if unload.not_before > now]
        for unload in due:
            state = self.state
            if state is None or unload.adapter in rollout.serving(state):
                continue  # a route points at it again: never unload what serves
            emit = rollout.Emitter(state, now)
            owner = unload.deployment_id or state.deployment_id
            try:
                self.adapters.unload(unload.adapter)
                emit("unload", adapter_name=unload.adapter, deployment_id=owner,
                     reason=f"vLLM no longer serves {unload.adapter}")
            except LlmwatchError as exc:
                emit("unload", "failed", adapter_name=unload.adapter, deployment_id=owner, reason=str(exc))
            self.apply(emit.transition())

    def tick(self) -> None:
        now = utcnow()
        clock = time.monotonic()
        try:
            if self.unloads:
                self.do_unloads(now)
            if clock >= self._next_health:
                self._next_health = clock + HEALTH_EVERY_SECONDS
                self.health()
                self.watch_resolution(now)
            state = self.state
            if state is None or not state.active:
                return
            if clock >= self._next_decisions:
                self._next_decisions = clock + DECISIONS_EVERY_SECONDS
                self.decisions(state, now)
                state = self.state
            if state is not None and state.phase == "canary" and not state.paused and self.analysis_due(state, now):
                self.analyse(state, now)
        except StoreUnavailableError as exc:
            log.warning("store unavailable, the canary waits: %s", exc)

    def stop(self) -> None:
        """A canary in progress stays where it is: the next deployer resumes it from its events."""
        self.stopping.set()


def run_deployer(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM."""
    run_member(settings, topic=settings.topics.models, group_id=settings.deploy.group_id,
               client_id="llmwatch-deployer", build=lambda publisher: Deployer(settings, publisher),
               ready=f"llmwatch deployer ready: candidates from {settings.topics.models}, routes to "
                     f"{settings.topics.deployments}, vLLM at {settings.serving.vllm_base_url}")

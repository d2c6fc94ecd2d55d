"""The deployer's state machine: transitions, and the same state rebuilt from the events it published."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from schemas.events import DeploymentEvent, ModelCandidateEvent
from serving.deployer import rollout
from serving.deployer.canary import Verdict
from serving.deployer.rollout import Load, Policy, Rollout, Transition, Unload

BASE = "smollm2-135m"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PASS = Verdict(True, ("every check passed",), {"canary.requests": 30})
FAIL = Verdict(False, ("thumbs_down_rate 0.9 is 0.8 above stable's 0.1",), {"canary.thumbs_down_rate": 0.9})
POLICY = Policy(steps=(10, 50, 100), failure_limit=2)


def candidate(name: str = "smol-1") -> ModelCandidateEvent:
    return ModelCandidateEvent(run_id="run-1", base_model=BASE, adapter_name=name, adapter_uri=f"/a/{name}",
                               passed_gate=True, trigger_alert_id=uuid4())


class Log:
    """Every event published so far: the state must always equal the fold of them (a restart's view)."""

    def __init__(self) -> None:
        self.events: list[DeploymentEvent] = []
        self.now = T0

    def take(self, transition: Transition) -> Rollout:
        self.events += transition.events
        assert rollout.fold_all(self.events) == transition.state
        assert transition.state is not None
        return transition.state

    def person(self, state: Rollout, action: str) -> Rollout:
        """`llmwatch deploy approve|pause`: an event of the CLI, read by the deployer and folded in."""
        self.events.append(DeploymentEvent(deployment_id=state.deployment_id, base_model=BASE, action=action,
                                           status="succeeded", actor="cli", timestamp=self.tick(1)))
        folded = rollout.fold(state, self.events[-1])
        assert folded is not None and folded == rollout.fold_all(self.events)
        return folded

    def tick(self, seconds: float = 60) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def started(log: Log, stable: str = "", policy: Policy = POLICY) -> Rollout:
    begun = rollout.begin(candidate(), stable, log.now)
    assert begun.work == [Load("smol-1")] and begun.events[0].action == "load"
    log.take(begun)
    assert begun.state is not None
    state = log.take(rollout.loaded(begun.state, policy, log.tick(1)))
    assert state.phase == "canary" and state.step == 0
    return state


def test_a_healthy_canary_steps_up_and_is_promoted_and_the_old_adapter_unloaded_after_the_grace() -> None:
    log = Log()
    state = started(log, stable="smol-0")
    assert log.events[-1].weights == {"smol-0": 90, "smol-1": 10} and log.events[-1].route == BASE
    state = log.take(rollout.judged(state, PASS, POLICY, log.tick()))
    assert state is not None and state.step == 1 and log.events[-1].weights == {"smol-0": 50, "smol-1": 50}
    promoted = rollout.judged(state, PASS, POLICY, log.tick(), timings={"alert_to_promotion_seconds": 99},
                              grace_seconds=30)
    state = log.take(promoted)
    assert state is not None and state.phase == "promoted"
    event = log.events[-1]
    assert (event.action, event.weights, event.traffic_percent) == ("promote", {"smol-1": 100}, 100)
    assert event.numbers["alert_to_promotion_seconds"] == 99
    assert promoted.work == [Unload("smol-0", log.now + timedelta(seconds=30))]
    assert [w.deployment_id for w in promoted.work if isinstance(w, Unload)] == ["dep-smol-1"]  # recorded there
    assert rollout.pending_unloads(state, 30) == promoted.work
    # never promoted twice: a late verdict or approval changes nothing
    assert rollout.judged(state, PASS, POLICY, log.tick()).events == []
    assert rollout.approved(state, log.now).events == []


def test_from_the_base_model_the_canary_splits_with_the_base_and_a_rollback_removes_the_route() -> None:
    log = Log()
    state = started(log)
    assert log.events[-1].weights == {BASE: 90, "smol-1": 10}
    state = log.take(rollout.judged(state, FAIL, POLICY, log.tick()))
    assert state is not None and state.failures == 1 and state.phase == "canary"
    hold = log.events[-1]
    assert (hold.action, hold.status, hold.route, hold.numbers["failures"]) == ("canary", "failed", "", 1)
    back = rollout.judged(state, FAIL, POLICY, log.tick())
    state = log.take(back)
    assert state is not None and state.phase == "rolled_back"
    event = log.events[-1]
    assert event.action == "rollback" and event.weights == {} and event.route == BASE
    assert "analysis failed 2 times" in event.reason and event.numbers["canary.thumbs_down_rate"] == 0.9
    assert back.work == [Unload("smol-1", log.now)]


def test_a_pass_between_failures_resets_the_count() -> None:
    log = Log()
    state = started(log)
    state = log.take(rollout.judged(state, FAIL, POLICY, log.tick()))
    assert state is not None
    state = log.take(rollout.judged(state, PASS, POLICY, log.tick()))
    assert state is not None and state.failures == 0 and state.step == 1
    state = log.take(rollout.judged(state, FAIL, POLICY, log.tick()))
    assert state is not None and state.phase == "canary" and state.failures == 1


def test_approval_is_waited_for_and_a_pause_holds_the_canary() -> None:
    log = Log()
    policy = Policy(steps=(50, 100), failure_limit=1, require_approval=True)
    state = started(log, policy=policy)
    state = log.person(state, "pause")
    assert state.paused
    assert rollout.judged(state, PASS, policy, log.tick()).events == []  # paused: no analysis moves it
    state = log.person(state, "approve")
    assert not state.paused and not state.approved  # mid-canary it only lifts the pause
    state = log.take(rollout.judged(state, PASS, policy, log.tick()))
    assert state is not None and state.phase == "awaiting_approval" and log.events[-1].action == "pause"
    assert rollout.approved(state, log.now).events == []  # nobody approved yet
    state = log.person(state, "approve")
    assert state.approved
    state = log.take(rollout.approved(state, log.tick(1)))
    assert state is not None and state.phase == "promoted" and log.events[-1].weights == {"smol-1": 100}


def test_a_restart_resumes_from_the_events_mid_canary() -> None:
    log = Log()
    state = started(log, stable="smol-0")
    state = log.take(rollout.judged(state, FAIL, POLICY, log.tick()))
    resumed = rollout.fold_all(list(log.events))
    assert resumed == state and resumed is not None
    assert (resumed.phase, resumed.step, resumed.failures, resumed.since) == ("canary", 0, 1, log.now)
    assert rollout.reloads(resumed, {BASE}) == [Load("smol-0"), Load("smol-1")]
    assert rollout.reloads(resumed, {BASE, "smol-0", "smol-1"}) == []
    assert rollout.pending_unloads(resumed, 30) == []


def test_a_failed_load_leaves_stable_serving_and_says_why() -> None:
    log = Log()
    begun = rollout.begin(candidate(), "smol-0", log.now)
    state = log.take(begun)
    assert state is not None
    state = log.take(rollout.load_failed(state, "vLLM refused to load adapter 'smol-1'", log.tick(1)))
    assert state is not None and state.phase == "failed" and not state.active
    event = log.events[-1]
    assert event.status == "failed" and "smol-0 keeps serving" in event.reason and event.route == ""
    assert rollout.serving(state) == {"smol-0"}


def test_a_newer_candidate_supersedes_the_older_after_rolling_it_back() -> None:
    log = Log()
    state = started(log, stable="smol-0")
    back = rollout.rollback(state, "superseded by the newer candidate smol-2", log.tick())
    state = log.take(back)
    assert state is not None and state.phase == "rolled_back" and log.events[-1].weights == {"smol-0": 100}
    newer = rollout.begin(candidate("smol-2"), state.stable, log.tick(1))
    state = log.take(newer)
    assert state is not None and state.candidate == "smol-2" and state.stable == "smol-0"
    assert state.deployment_id == "dep-smol-2" and state.phase == "loading"
    # the old candidate is not served by the new rollout's route, so its unload goes ahead
    assert "smol-1" not in rollout.serving(state)


def test_a_recorded_resolution_is_not_a_second_promotion() -> None:
    log = Log()
    begun = rollout.begin(candidate(), "", log.now)
    assert begun.state is not None
    log.take(begun)
    state = log.take(rollout.loaded(begun.state, Policy(steps=(100,)), log.tick(1)))
    assert state is not None and state.phase == "promoted"
    emit = rollout.Emitter(state, log.tick())
    emit("promote", reason="the alert resolved", numbers={"alert_to_resolution_seconds": 120})
    again = rollout.fold_all(emit.events, state)
    assert again is not None and again.resolution_recorded and again.ended_at == state.ended_at


def test_a_stored_row_as_the_worker_returns_it_folds_like_the_published_event() -> None:
    from serving.deployer.process import event_from_row

    log = Log()
    state = started(log, stable="smol-0")
    published = log.events[-1]
    row = {"event_id": str(published.event_id), "millis": int(published.timestamp.timestamp() * 1000),
           "deployment_id": published.deployment_id, "base_model": BASE, "adapter_name": "smol-1",
           "action": "canary", "status": "succeeded", "traffic_percent": 10, "reason": published.reason,
           "route": BASE, "weights": {"smol-0": 90, "smol-1": 10}, "stable_adapter": "smol-0", "actor": "deployer",
           "run_id": "run-1", "trigger_alert_id": str(published.trigger_alert_id), "numbers": {"step": 0}}
    stored = event_from_row(row)
    assert stored == published
    assert rollout.fold_all([*log.events[:-1], stored]) == state
    assert event_from_row(row | {"trigger_alert_id": None, "adapter_name": None}).trigger_alert_id is None


def test_a_rollback_by_hand_ends_the_canary_and_its_candidate_is_unloaded_unless_it_got_the_traffic() -> None:
    log = Log()
    state = started(log, stable="smol-0")
    for weights, unloads in (({"smol-0": 100.0}, [Unload("smol-1", log.now)]), ({"smol-1": 100.0}, [])):
        by_hand = DeploymentEvent(deployment_id=state.deployment_id, base_model=BASE, action="rollback",
                                  status="succeeded", actor="cli", route=BASE, weights=weights, timestamp=log.now)
        after = rollout.fold(state, by_hand)
        assert after is not None and after.phase == "rolled_back" and not after.active
        assert rollout.after_people(state, after, log.now) == unloads
        assert rollout.pending_unloads(after, 0) == unloads
        assert rollout.judged(after, PASS, POLICY, log.tick()).events == []  # no step after it

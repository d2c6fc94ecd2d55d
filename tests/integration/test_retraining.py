"""Retraining on the real broker, store and peft: alerts in, candidates (or reasons) out.

One worker and one trainer (`llmwatch trainer`, real processes) share a data directory. Three models get
traffic: `house`, whose corrections teach a house style; `shuffled`, whose corrections belong to other
questions; `tiny`, with three corrections. A retrain alert for each goes to llm.alerts as the alert rules
would publish it. The trainer answers them one at a time (few steps, small rank: this tier is about the
loop, not the model), and a replay of the house alert during its run must not start another run, nor
must a trainer restarted under a fresh consumer group, which re-reads every alert.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kafka import KafkaAdminClient, TopicPartition

from llmwatch.house_style import SIGN_OFF, correction_traffic
from schemas.events import AlertEvent, TrainingRunEvent
from serving.vllm.model_files import ensure_model
from streams.settings import Metrics, Serving, Training
from tests.integration.conftest import Child, Worker, free_port, to_env, wait_until
from tests.integration.serving.conftest import model_cache
from trainers.lineage import read_manifest

pytestmark = pytest.mark.integration

TRAINING = Training(min_examples=20, max_steps=10, batch_size=4, learning_rate=3e-3, eval_examples=8,
                    max_new_tokens=40, log_every=2, max_seconds=900)
RUN_TIMEOUT = 1200.0
"""A liveness bound for one run of 10 steps and its evaluation on a loaded 2-core machine."""


@dataclass
class TrainerProcess(Child):
    command: ClassVar[str] = "trainer"

    def ready(self) -> bool:
        return "llmwatch trainer ready" in self.log_path.read_text(errors="replace")


def retrain_alert(model: str) -> AlertEvent:
    return AlertEvent(rule="corrections_far_from_answers", state="firing", severity="warning",
                      metric="correction_rouge_l_mean", value=0.12, threshold=0.3, model=model,
                      fingerprint=f"fp-{model}", labels={"alertname": "corrections_far_from_answers"},
                      actions=["retrain"], window_seconds=60)


def rows(worker: Worker, sql: str) -> list[dict[str, Any]]:
    from streams.store.sql import query

    result = query(worker.settings, sql)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


@dataclass
class Loop:
    worker: Worker
    trainer: TrainerProcess
    alerts: dict[str, AlertEvent]
    sent: dict[int, int]
    """The last offset of an alert (the replay included) on each partition of llm.alerts."""

    def consumed(self, group: str) -> bool:
        """Whether the trainer in `group` has committed past every alert (each is handled before its commit)."""
        admin = KafkaAdminClient(bootstrap_servers=self.worker.settings.bootstrap_servers)
        try:
            offsets = admin.list_group_offsets(group)[group]
        finally:
            admin.close()
        topic = self.worker.settings.topics.alerts
        return all((found := offsets.get(TopicPartition(topic, p))) is not None and found.offset > offset
                   for p, offset in self.sent.items())

    def runs(self, alert: AlertEvent) -> list[dict[str, Any]]:
        return rows(self.worker, "SELECT run_id, status, step, loss, reason, dataset_size, adapter_name, timestamp "
                    f"FROM training_runs WHERE trigger_alert_id = '{alert.event_id}' ORDER BY timestamp")

    def candidate(self, model: str) -> dict[str, Any]:
        found = wait_until(lambda: rows(self.worker, f"SELECT * FROM model_candidates WHERE base_model = '{model}'"),
                           RUN_TIMEOUT, f"a candidate for {model}")
        assert len(found) == 1
        return found[0]


@pytest.fixture(scope="module")
def loop(make_worker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    base = ensure_model(model_cache())
    worker = make_worker(serving=Serving(model=str(base)), training=TRAINING,
                         metrics=Metrics(embed_per_second=0)).start()
    with worker.publisher() as publisher:
        for model, count, shuffled in (("house", 48, False), ("shuffled", 48, True), ("tiny", 3, False)):
            for inference, feedback in correction_traffic(count, model=model, shuffled=shuffled, seed=7):
                publisher.publish(inference)
                publisher.publish(feedback)
    wait_until(lambda: worker.count("SELECT count() FROM feedback_events") == 99
               and worker.count("SELECT count() FROM inference_events") == 99, 120, "the traffic to be stored")
    trainer = TrainerProcess(worker.settings, worker.settings.data_dir / "trainer.log").start()
    alerts = {model: retrain_alert(model) for model in ("tiny", "house", "shuffled")}
    with worker.publisher() as publisher:
        futures = [publisher.publish(alert) for alert in alerts.values()]
        publisher.flush()
    sent: dict[int, int] = {}
    for future in futures:
        done = future.get(timeout=30)
        sent[done.partition] = max(sent.get(done.partition, -1), done.offset)
    wait_until(lambda: any(r["status"] == "training" for r in rows(
        worker, f"SELECT status FROM training_runs WHERE trigger_alert_id = '{alerts['house'].event_id}'")),
        RUN_TIMEOUT, "the house run to train")
    with worker.publisher() as publisher:  # the same alert again (a redelivery), while its run trains
        replay = publisher.publish(alerts["house"]).get(timeout=30)
    sent[replay.partition] = max(sent.get(replay.partition, -1), replay.offset)
    try:
        yield Loop(worker, trainer, alerts, sent)
    finally:
        if trainer.process is not None:
            trainer.stop(signal.SIGKILL)
        worker.stop()


def test_too_little_data_is_skipped_with_the_reason(loop: Loop) -> None:
    runs = wait_until(lambda: [r for r in loop.runs(loop.alerts["tiny"]) if r["status"] == "skipped"] and
                      loop.runs(loop.alerts["tiny"]), RUN_TIMEOUT, "the tiny run to end")
    assert [r["status"] for r in runs] == ["queued", "building_dataset", "skipped"]
    assert "3 usable examples, 20 needed" in runs[-1]["reason"]
    assert not rows(loop.worker, "SELECT * FROM model_candidates WHERE base_model = 'tiny'")


def test_house_style_corrections_give_a_candidate_that_passes_the_gate(loop: Loop) -> None:
    found = loop.candidate("house")
    assert found["passed_gate"], found["gate_reason"]
    ours, base = found["eval_metrics"], found["baseline_metrics"]
    assert ours["rouge_l"] > base["rouge_l"] + 0.02 and found["baseline"] == "house"
    assert found["gate_reason"].startswith("passed: rouge_l")

    adapter = Path(found["adapter_uri"])
    assert adapter.parent == loop.worker.settings.adapters_dir and adapter.name.startswith("house-")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == TRAINING.rank <= loop.worker.settings.serving.max_lora_rank
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0

    manifest = read_manifest(adapter)  # complete, or this raises
    alert = loop.alerts["house"]
    assert manifest.trigger.alert_id == str(alert.event_id) and manifest.trigger.fingerprint == "fp-house"
    assert manifest.dataset.rows == 48 and manifest.dataset.train + manifest.dataset.heldout == 48
    assert "inference_events" in manifest.dataset.query and len(manifest.dataset.rows_sha256) == 64
    assert manifest.base_model.weights_sha256 and manifest.libraries["peft"] != "not installed"
    assert len(manifest.training.loss_curve) == TRAINING.max_steps
    assert manifest.training.loss_curve[-1][1] < manifest.training.loss_curve[0][1]
    assert manifest.evaluation.candidate == ours and manifest.gate.passed
    assert set(manifest.timings) == {"dataset", "training", "evaluation", "total"}
    assert any(SIGN_OFF in s.candidate for s in manifest.evaluation.samples)

    steps = [r["status"] for r in loop.runs(alert)]
    assert steps[:3] == ["queued", "building_dataset", "training"] and steps[-2:] == ["evaluating", "succeeded"]
    losses = [r for r in loop.runs(alert) if r["status"] == "training" and r["loss"] is not None]
    assert [r["step"] for r in losses] == list(range(TRAINING.log_every, TRAINING.max_steps + 1, TRAINING.log_every))


def test_shuffled_answers_are_rejected_by_the_gate_with_its_numbers(loop: Loop) -> None:
    found = loop.candidate("shuffled")
    assert not found["passed_gate"]
    assert found["gate_reason"].startswith("rejected: relevance")
    ours, base = found["eval_metrics"], found["baseline_metrics"]
    assert ours["relevance"] < base["relevance"] - 0.1
    assert f"relevance {ours['relevance']:.4g} vs {base['relevance']:.4g}" in found["gate_reason"]
    assert read_manifest(Path(found["adapter_uri"])).gate.passed is False
    # The last run has ended (house's while shuffled trained would hold shuffled's scratch): none is left behind.
    assert not [p for p in loop.worker.settings.adapters_dir.iterdir() if p.name.startswith(".")]


def test_a_replayed_alert_during_its_run_starts_no_second_run(loop: Loop) -> None:
    loop.candidate("shuffled")  # the last run
    wait_until(lambda: loop.consumed(TRAINING.group_id), 60, "the trainer to consume the replayed alert")
    runs = loop.runs(loop.alerts["house"])
    assert len({r["run_id"] for r in runs}) == 1
    assert loop.worker.count("SELECT uniqExact(run_id) FROM training_runs WHERE base_model = 'house'") == 1


def test_a_restarted_trainer_trains_no_alert_twice_and_closes_what_a_crash_left(loop: Loop) -> None:
    loop.candidate("shuffled")
    assert loop.trainer.stop() == 0
    # What a trainer killed mid-run leaves: a run whose last step is `training`, and a half-written adapter.
    orphan = TrainingRunEvent(run_id="crashed-run", status="training", base_model="house", step=3, max_steps=10)
    with loop.worker.publisher() as publisher:
        publisher.publish(orphan)
    scratch = loop.worker.settings.adapters_dir / ".partial-crashed"
    (scratch / "house-20261202-000000").mkdir(parents=True)
    wait_until(lambda: rows(loop.worker, "SELECT 1 FROM training_runs WHERE run_id = 'crashed-run'"), 60, "the orphan")
    before = loop.worker.count("SELECT count() FROM training_runs")

    group = f"trainer-{uuid.uuid4().hex[:8]}"  # a fresh group reads llm.alerts from the start
    fresh = loop.worker.settings.model_copy(
        update={"training": loop.worker.settings.training.model_copy(update={"group_id": group})})
    loop.trainer = TrainerProcess(fresh, loop.worker.settings.data_dir / "trainer-2.log").start()
    closed = wait_until(lambda: rows(loop.worker, "SELECT status, reason FROM training_runs "
                                     "WHERE run_id = 'crashed-run' AND status = 'failed'"), 60, "the orphan closed")
    assert "while the run was training" in closed[0]["reason"]
    assert not scratch.exists()
    wait_until(lambda: loop.consumed(group), 120, "the new trainer to read every alert")
    assert loop.trainer.log_path.read_text().count("answered by an earlier run") == len(loop.alerts)
    assert loop.worker.count("SELECT count() FROM training_runs") == before + 1  # the orphan's end, nothing else

def llmwatch(loop: Loop, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | to_env(loop.worker.settings) | {"COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "llmwatch", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_models_lists_the_candidates_and_shows_a_manifest(loop: Loop) -> None:
    house = loop.candidate("house")["adapter_name"]
    listed = llmwatch(loop, "models")
    assert listed.returncode == 0, listed.stderr
    assert house in listed.stdout and "passed" in listed.stdout and "rejected" in listed.stdout
    shown = llmwatch(loop, "models", "show", house)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["trigger"]["alert_id"] == str(loop.alerts["house"].event_id)
    missing = llmwatch(loop, "models", "show", "no-such-adapter")
    assert missing.returncode == 1 and "llmwatch models" in missing.stderr


def test_train_by_hand_runs_the_same_steps(loop: Loop) -> None:
    done = llmwatch(loop, "train", "--model", "tiny", "--since", "1d")
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stdout and "3 usable examples, 20 needed" in done.stdout
    sql = "SELECT status FROM training_runs WHERE base_model = 'tiny' AND trigger_alert_id IS NULL ORDER BY timestamp"
    runs = wait_until(lambda: len(found := rows(loop.worker, sql)) >= 3 and found, 60, "the run's events stored")
    assert [r["status"] for r in runs] == ["queued", "building_dataset", "skipped"]


def children(pid: int) -> dict[int, str]:
    """{pid: command line} of a process's children, from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_up_starts_the_trainer_and_deployer_when_enabled_and_stops_them_with_the_stack(tmp_path: Path) -> None:
    env = os.environ | {"LLMWATCH_DATA_DIR": str(tmp_path), "LLMWATCH_EMBEDDED_KAFKA_PORT": str(free_port()),
                        "LLMWATCH_WEB_PORT": str(free_port()), "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": "",
                        "LLMWATCH_TRAINING__ENABLED": "true", "LLMWATCH_METRICS__EMBED_PER_SECOND": "0"}
    with (tmp_path / "up.log").open("wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "llmwatch", "up"], stdout=log, stderr=subprocess.STDOUT, env=env)
    logs = tmp_path / "logs"
    try:
        def ready(role: str) -> bool:
            return (logs / f"{role}.log").exists() and f"llmwatch {role} ready" in (logs / f"{role}.log").read_text()

        for role in ("trainer", "deployer"):
            wait_until(functools.partial(ready, role), 300, f"the {role} under llmwatch up")
        lines = children(up.pid).items()
        (trainer,) = [pid for pid, line in lines if line.endswith("llmwatch trainer ")]
        (deployer,) = [pid for pid, line in lines if line.endswith("llmwatch deployer ")]
        up.send_signal(signal.SIGINT)
        assert up.wait(180) == 0, (tmp_path / "up.log").read_text()[-3000:]
    finally:
        if up.poll() is None:
            up.kill()
    assert not Path(f"/proc/{trainer}").exists(), "the trainer outlived llmwatch up"
    assert not Path(f"/proc/{deployer}").exists(), "the deployer outlived llmwatch up"

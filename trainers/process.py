"""The trainer process (`llmwatch trainer`): retrain alerts in, runs out, one at a time.

A plain kafka-python consumer group on llm.alerts, not a Faust agent: a run blocks for minutes, so it runs
in a thread of its own while the main thread keeps polling (and the group keeps this member). It acts on
firing alerts whose rule asks for `retrain`. Every alert it acts on gets an answer at once on llm.training
(queued, or skipped as coalesced into a waiting run); the same alert is never answered twice, also after a
restart, because answered alerts are looked up in `training_runs`. Runs that a stopped or crashed trainer
left unfinished are closed as failed when the next one starts.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from kafka import KafkaConsumer
from pydantic import ValidationError

from schemas.errors import LlmwatchError, StoreUnavailableError
from schemas.events import AlertEvent, Event, TrainingRunEvent, utcnow
from streams.kafka.topics import ensure_topics
from streams.processes import die_with_parent, stop_process
from streams.publisher import Publisher
from streams.settings import Settings
from streams.store.training import answered, unfinished_runs
from trainers.runner import RunRequest, TrainingRunner, remove_partial
from trainers.schedule import Schedule

log = logging.getLogger(__name__)


def quiet_cpu_threads() -> None:
    """Torch's OpenMP threads spin while they wait; on cores shared with the worker and vLLM that makes a
    training step several times slower. Must run before torch is imported, so entry points call it first."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def wants_retrain(alert: AlertEvent) -> bool:
    return alert.state == "firing" and "retrain" in alert.actions


class Trainer:
    def __init__(self, settings: Settings, publisher: Publisher, runner: TrainingRunner | None = None) -> None:
        self.settings = settings
        self.publisher = publisher
        self.runner = runner or TrainingRunner(settings, self.publish)
        self.schedule: Schedule[RunRequest] = Schedule()
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, event: Event) -> None:
        self.publisher.publish(event)
        self.publisher.flush()

    def recover(self, wait_seconds: float = 600) -> None:
        """Close the runs a previous trainer left open, and remove its scratch folders.

        Waits for the store first: under `llmwatch up` the trainer starts before the worker that owns it."""
        for name in remove_partial(self.settings.adapters_dir):
            log.info("removed %s: an adapter a stopped run did not finish", name)
        deadline = time.monotonic() + wait_seconds
        for attempt in itertools.count():
            try:
                unfinished = unfinished_runs(self.settings)
                break
            except StoreUnavailableError as exc:
                if self.stopping.wait(1.0):
                    return
                if time.monotonic() > deadline:
                    raise
                if attempt == 0:
                    log.info("waiting for the store: %s", exc)
        for run in unfinished:
            reason = (f"the trainer stopped (restart or crash) while the run was {run['status']}; "
                      "nothing of it was offered")
            alert = run.get("trigger_alert_id")
            self.publish(TrainingRunEvent(run_id=run["run_id"], status="failed", base_model=run["base_model"],
                                          adapter=run.get("adapter") or "", reason=reason, error=reason,
                                          trigger_alert_id=uuid.UUID(str(alert)) if alert else None))
            log.warning("run %s: %s", run["run_id"], reason)

    def handle(self, value: bytes) -> None:
        try:
            alert = AlertEvent.model_validate_json(value)
        except ValidationError:
            return  # the worker's ingest agent on the same topic dead-letters it
        if not wants_retrain(alert):
            return
        models = self.settings.training.models
        if models and alert.model not in models:
            log.info("alert %s names %s, which this trainer does not train (%s)", alert.event_id, alert.model, models)
            return
        if alert.event_id in self.schedule.seen:
            return
        try:
            if answered(self.settings, alert.event_id):
                self.schedule.seen.add(alert.event_id)
                log.info("alert %s was answered by an earlier run; not training again", alert.event_id)
                return
        except LlmwatchError as exc:
            log.warning("cannot tell whether alert %s was answered (%s); treating it as new", alert.event_id, exc)
        training = self.settings.training
        request = RunRequest.for_alert(alert, timedelta(hours=training.since_hours))
        age = utcnow() - alert.timestamp
        if age > timedelta(hours=training.max_alert_age_hours):
            self.schedule.seen.add(alert.event_id)
            self.runner.emit(request, "skipped", reason=f"the alert is {age.total_seconds() / 3600:.1f} h old "
                             f"(LLMWATCH_TRAINING__MAX_ALERT_AGE_HOURS is {training.max_alert_age_hours:g})")
            return
        offer = self.schedule.offer(alert.event_id, alert.model, request)
        if offer.decision == "start":
            self.runner.queue(request, reason=f"alert {alert.rule} on {alert.model}")
            self._start(request)
        elif offer.decision == "wait":
            assert offer.into is not None
            self.runner.queue(request, reason=f"waits for run {offer.into.run_id} ({offer.into.model})")
        elif offer.decision == "coalesced":
            assert offer.into is not None
            self.runner.emit(request, "skipped", reason=f"coalesced into the waiting run {offer.into.run_id}")
        log.info("alert %s (%s on %s): %s", alert.event_id, alert.rule, alert.model, offer.decision)

    def _start(self, request: RunRequest) -> None:
        def work() -> None:
            self.runner.run(request, should_stop=self.stopping.is_set)

        self._thread = threading.Thread(target=work, name=f"run-{request.run_id[:8]}", daemon=True)
        self._thread.start()

    def tick(self) -> None:
        """Start the next waiting run once the current one has ended."""
        if self._thread is not None and not self._thread.is_alive():
            self._thread = None
            following = self.schedule.finished()
            if following is not None and not self.stopping.is_set():
                self._start(following)

    def stop(self, timeout: float = 120) -> None:
        """Ask a running run to stop (it ends as failed, nothing offered) and wait for it."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def serve(self, consumer: KafkaConsumer) -> None:
        while not self.stopping.is_set():
            batches = consumer.poll(timeout_ms=500)
            for messages in batches.values():
                for message in messages:
                    if message.value:
                        self.handle(message.value)
            if batches:
                consumer.commit()
            self.tick()


def consumer_for(settings: Settings) -> KafkaConsumer:
    session_ms = int(settings.kafka_session_timeout_seconds * 1000)
    return KafkaConsumer(
        settings.topics.alerts, bootstrap_servers=settings.bootstrap_servers.split(","),
        group_id=settings.training.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=session_ms, heartbeat_interval_ms=max(session_ms // 6, 100),
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms, client_id="llmwatch-trainer",
    )


def run_trainer(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; a run in progress is stopped at its next step and ends as failed."""
    quiet_cpu_threads()
    ensure_topics(settings.bootstrap_servers, settings.topics)
    with Publisher.from_settings(settings, client_id="llmwatch-trainer") as publisher:
        trainer = Trainer(settings, publisher)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: trainer.stopping.set())
        trainer.recover()
        if trainer.stopping.is_set():
            return
        consumer = consumer_for(settings)
        log.info("llmwatch trainer ready: alerts from %s, adapters into %s", settings.topics.alerts,
                 settings.adapters_dir)
        try:
            trainer.serve(consumer)
        finally:
            trainer.stop()
            consumer.close()


class TrainerChild:
    """`llmwatch trainer` as a child of `llmwatch up`, in a process group of its own (Ctrl-C reaches only `up`)."""

    def __init__(self, settings: Settings, progress: Callable[[str], None]) -> None:
        self.log_file = settings.data_dir / "logs" / "trainer.log"
        self.progress = progress
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        Path(self.log_file).parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as output:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "llmwatch", "trainer"], stdout=output, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=os.environ.copy(), preexec_fn=die_with_parent, start_new_session=True)
        self.progress(f"trainer: retrains on alerts that ask for it (log: {self.log_file})")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, 150)

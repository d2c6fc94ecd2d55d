"""The trainer process (`llmwatch trainer`): retrain alerts in, runs out, one at a time.

A plain kafka-python consumer group on llm.alerts, not a Faust agent: a run blocks for minutes, so it runs
in a thread of its own while the main thread keeps polling (and the group keeps this member). It acts on
firing alerts whose rule asks for `retrain`. Every alert it acts on gets an answer at once on llm.training
(queued, or skipped as coalesced into a waiting run); the same alert is never answered twice, also after a
restart, because answered alerts are looked up in `training_runs`. Runs that a stopped or crashed trainer
left unfinished are closed as failed when the next one starts.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import timedelta

from pydantic import ValidationError

from schemas.errors import LlmwatchError
from schemas.events import AlertEvent, Event, TrainingRunEvent, utcnow
from streams.kafka.group_member import run_member, wait_for_store
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
        unfinished = wait_for_store(lambda: unfinished_runs(self.settings), self.stopping, wait_seconds)
        if unfinished is None:
            return
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


def run_trainer(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; a run in progress is stopped at its next step and ends as failed."""
    quiet_cpu_threads()
    run_member(settings, topic=settings.topics.alerts, group_id=settings.training.group_id,
               client_id="llmwatch-trainer", build=lambda publisher: Trainer(settings, publisher),
               ready=f"llmwatch trainer ready: alerts from {settings.topics.alerts}, "
                     f"adapters into {settings.adapters_dir}")

"""One retraining run, start to end, with an event at every step: dataset, LoRA, evaluation, gate, lineage.

Used by the trainer process (for alerts) and by `llmwatch train` (by hand). Each step is a
`TrainingRunEvent` on llm.training (the worker stores it in `training_runs`): queued, building_dataset,
training (and the loss every `log_every` steps), evaluating, then succeeded, skipped or failed with the
reason. A finished candidate is a `ModelCandidateEvent` on llm.models. The adapter is written into a hidden
folder under the adapters directory and renamed into place only once it is complete, manifest included, so
nothing half-written is ever offered; a failed run leaves nothing behind.

Two sideways imports, on purpose: the base model is found (or converted, once) by
`serving.vllm.model_files`, so that training uses the very folder vLLM serves; and feedback is redacted again
with the gateway's own `serving.gateway.redaction.Redactor`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from processors.text_signals import is_refusal
from processors.toxicity import ToxicityScorer, load_toxicity_scorer
from schemas.errors import LlmwatchError
from schemas.events import AlertEvent, Event, ModelCandidateEvent, TrainingRunEvent, utcnow
from serving.gateway.redaction import Redactor
from serving.vllm.model_files import default_model_dir, ensure_model
from streams.settings import Settings
from streams.store.training import records, serving_adapters, training_rows_sql
from trainers.dataset import Dataset, DatasetPolicy, build_dataset, shortfall
from trainers.gate import decide
from trainers.lineage import (
    BaseModelRecord,
    DatasetRecord,
    EvaluationRecord,
    GateRecord,
    Manifest,
    Sample,
    TrainingRecord,
    Trigger,
    adapter_name,
    adapters_to_delete,
    library_versions,
    weights_sha256,
    write_manifest,
)
from trainers.lora import LoraParams, TrainResult

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"


class Stopped(LlmwatchError):
    """The process was asked to stop during the run."""


class Progress(Protocol):
    def stage(self, status: str, detail: str) -> None: ...
    def step(self, step: int, max_steps: int, loss: float) -> None: ...


class LogProgress:
    def stage(self, status: str, detail: str) -> None:
        log.info("%s: %s", status, detail)

    def step(self, step: int, max_steps: int, loss: float) -> None:
        log.debug("step %d/%d loss %.4f", step, max_steps, loss)


@dataclass(frozen=True)
class RunRequest:
    model: str
    adapter: str = ""
    alert: AlertEvent | None = None
    since: timedelta = timedelta(days=7)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def for_alert(cls, alert: AlertEvent, since: timedelta) -> RunRequest:
        return cls(model=alert.model, adapter=alert.adapter, alert=alert, since=since)


@dataclass
class RunOutcome:
    run_id: str
    status: str
    reason: str
    candidate: ModelCandidateEvent | None = None
    adapter_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    dataset: Dataset | None = None


def base_model_dir(settings: Settings, progress: Callable[[str], None] = log.info) -> Path:
    """The folder vLLM serves: LLMWATCH_SERVING__MODEL (a folder, or a Hugging Face id fetched into the hub cache),
    or SmolLM2 converted once into the data directory."""
    model = settings.serving.model
    if not model:
        return ensure_model(default_model_dir(settings.data_dir), progress)
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model))


class TrainingRunner:
    def __init__(self, settings: Settings, publish: Callable[[Event], None],
                 read: Callable[[str], list[dict[str, Any]]] | None = None,
                 scorer: ToxicityScorer | None = None) -> None:
        self.settings = settings
        self.training = settings.training
        self.publish = publish
        self.read = read or (lambda sql: records(settings, sql))
        self.scorer = scorer or load_toxicity_scorer(settings.metrics)
        self.redactor = Redactor.from_settings(settings.serving.redact, settings.serving.redact_patterns)
        self.params = LoraParams.from_settings(self.training)

    def _event(self, request: RunRequest, status: str, **fields: Any) -> TrainingRunEvent:
        return TrainingRunEvent(run_id=request.run_id, status=status, base_model=request.model,  # type: ignore[arg-type]
                                adapter=request.adapter,
                                trigger_alert_id=request.alert.event_id if request.alert else None, **fields)

    def emit(self, request: RunRequest, status: str, **fields: Any) -> TrainingRunEvent:
        event = self._event(request, status, **fields)
        self.publish(event)
        return event

    def queue(self, request: RunRequest, reason: str = "") -> None:
        self.emit(request, "queued", reason=reason, max_steps=self.params.max_steps, params=self.params.as_strings())

    def run(self, request: RunRequest, *, progress: Progress | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> RunOutcome:
        """Never raises for a failed run: it ends with a failed event and a failed outcome."""
        progress = progress or LogProgress()
        started = time.monotonic()
        timings: dict[str, float] = {}
        try:
            return self._run(request, progress, should_stop, started, timings)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, LlmwatchError) else f"{type(exc).__name__}: {exc}"
            log.error("run %s failed: %s\n%s", request.run_id, reason, traceback.format_exc())
            timings["total"] = time.monotonic() - started
            self.emit(request, "failed", reason=reason, error=reason,
                      metrics={f"{k}_seconds": v for k, v in timings.items()})
            progress.stage("failed", reason)
            return RunOutcome(request.run_id, "failed", reason, timings=timings)

    def _run(self, request: RunRequest, progress: Progress, should_stop: Callable[[], bool], started: float,
             timings: dict[str, float]) -> RunOutcome:
        since = utcnow() - request.since
        self.emit(request, "building_dataset", reason=f"traffic of {request.model} since {since:%Y-%m-%d %H:%M} UTC")
        progress.stage("building_dataset", f"reading traffic of {request.model} since {since:%Y-%m-%d %H:%M} UTC")
        sql = training_rows_sql(request.model, since, self.training.max_examples)
        rows = self.read(sql)
        policy = DatasetPolicy(min_score=self.training.min_score,
                               toxicity_threshold=self.settings.metrics.toxicity_threshold,
                               heldout_fraction=self.training.heldout_fraction,
                               max_contributor_share=self.training.max_contributor_share,
                               min_examples=self.training.min_examples)
        dataset = build_dataset(rows, policy, score_toxicity=lambda texts: list(self.scorer.score(texts)),
                                redact=self.redactor.redact, is_refusal=is_refusal)
        timings["dataset"] = time.monotonic() - started
        counts = {k: float(v) for k, v in dataset.counts.items()}
        short = shortfall(dataset, self.training.min_examples)
        if short is not None:
            timings["total"] = time.monotonic() - started
            self.emit(request, "skipped", reason=short, dataset_size=dataset.size, metrics=counts)
            progress.stage("skipped", short)
            return RunOutcome(request.run_id, "skipped", short, timings=timings, dataset=dataset)

        adapters = self.settings.adapters_dir
        adapters.mkdir(parents=True, exist_ok=True)
        name = adapter_name(request.model, datetime.now(UTC), (p.name for p in adapters.iterdir()))
        base_dir = base_model_dir(self.settings, lambda line: progress.stage("building_dataset", line))
        detail = f"{len(dataset.train)} train, {len(dataset.heldout)} held out; LoRA r={self.params.rank}"
        self.emit(request, "training", reason=detail, dataset_size=dataset.size, metrics=counts, adapter_name=name,
                  step=0, max_steps=self.params.max_steps, params=self.params.as_strings())
        progress.stage("training", detail)
        with tempfile.TemporaryDirectory(dir=adapters, prefix=PARTIAL_PREFIX) as scratch:
            staging = Path(scratch) / name
            result, evaluation, decision = self._train_and_judge(request, dataset, base_dir, name, staging,
                                                                 progress, should_stop, started, timings)
            timings["total"] = time.monotonic() - started
            manifest = Manifest(
                adapter_name=name, run_id=request.run_id, created_at=utcnow(), trigger=Trigger.of(request.alert),
                base_model=BaseModelRecord(name=request.model, adapter=request.adapter, path=str(base_dir),
                                           weights_sha256=weights_sha256(base_dir)),
                dataset=DatasetRecord(query=sql, since=since, rows=len(rows), rows_sha256=dataset.rows_sha256,
                                      counts=dataset.counts, train=len(dataset.train), heldout=len(dataset.heldout)),
                hyperparameters=self.params.as_strings() | {
                    "device": result.device, "eval_examples": str(self.training.eval_examples),
                    "max_new_tokens": str(self.training.max_new_tokens)},
                libraries=library_versions(),
                training=TrainingRecord(device=result.device, steps=result.steps, max_steps=self.params.max_steps,
                                        stopped_by=result.stopped_by, seconds=result.seconds,
                                        trainable_parameters=result.trainable_parameters,
                                        loss_curve=result.loss_curve),
                evaluation=evaluation,
                gate=GateRecord(passed=decision.passed, reason=decision.reason, criteria=list(self.training.gate)),
                timings=dict(timings),
            )
            write_manifest(staging, manifest)
            final = adapters / name
            staging.rename(final)  # complete, manifest included: only now is it offered
        candidate = ModelCandidateEvent(
            run_id=request.run_id, base_model=request.model, adapter_name=name, adapter_uri=str(final),
            eval_metrics=evaluation.candidate, passed_gate=decision.passed, gate_reason=decision.reason,
            baseline=evaluation.current_name, baseline_metrics=evaluation.current,
            trigger_alert_id=request.alert.event_id if request.alert else None, dataset_size=dataset.size,
            manifest_uri=str(final / "manifest.json"))
        self.publish(candidate)
        summary = {f"{k}_seconds": v for k, v in timings.items()} | {"steps": float(result.steps)}
        if result.loss_curve:
            summary["final_loss"] = result.loss_curve[-1][1]
        self.emit(request, "succeeded", reason=decision.reason, dataset_size=dataset.size, adapter_name=name,
                  artifact_uri=str(final), metrics=summary, step=result.steps, max_steps=self.params.max_steps,
                  loss=summary.get("final_loss"))
        progress.stage("succeeded", f"{name}: {decision.reason}")
        self.prune(request.model, keep=name)
        return RunOutcome(request.run_id, "succeeded", decision.reason, candidate, final, timings, dataset)

    def _train_and_judge(self, request: RunRequest, dataset: Dataset, base_dir: Path, name: str, staging: Path,
                         progress: Progress, should_stop: Callable[[], bool], started: float,
                         timings: dict[str, float]) -> tuple[TrainResult, EvaluationRecord, Any]:
        from trainers.evaluation import evaluate
        from trainers.lora import load_base, pick_device, save_adapter, train_lora

        training = self.training
        model, tokenizer = load_base(base_dir, pick_device(training.device))
        window: list[float] = []

        def on_log(step: int, loss: float) -> None:
            window.append(loss)
            progress.step(step, self.params.max_steps, loss)
            if step % training.log_every == 0:
                self.emit(request, "training", step=step, max_steps=self.params.max_steps,
                          loss=sum(window) / len(window), adapter_name=name, dataset_size=dataset.size)
                window.clear()

        peft_model, result = train_lora(model, tokenizer, dataset.train, self.params, on_log=on_log,
                                        should_stop=should_stop, work_dir=staging.parent / "trainer")
        if result.stopped_by == "stop" or should_stop():
            raise Stopped(f"the trainer was stopped during training (step {result.steps}); nothing is offered")
        timings["training"] = time.monotonic() - started - timings["dataset"]
        last = result.loss_curve[-1][1] if result.loss_curve else None
        detail = f"{len(dataset.heldout)} held-out examples, candidate and what serves now"
        self.emit(request, "evaluating", step=result.steps, max_steps=self.params.max_steps, loss=last,
                  adapter_name=name, dataset_size=dataset.size, reason=detail)
        progress.stage("evaluating", detail)
        save_adapter(peft_model, staging)
        judge = partial(evaluate, tokenizer=tokenizer, examples=dataset.heldout,
                        score_toxicity=lambda texts: list(self.scorer.score(texts)),
                        toxicity_threshold=self.settings.metrics.toxicity_threshold,
                        max_new_tokens=training.max_new_tokens, max_length=training.max_length,
                        generate_for=training.eval_examples)
        candidate, candidate_answers = judge(peft_model)
        if should_stop():
            raise Stopped("the trainer was stopped during the evaluation; nothing is offered")
        current_dir = self.settings.adapters_dir / request.adapter if request.adapter else None
        if current_dir is not None and (current_dir / "adapter_config.json").exists():
            peft_model.load_adapter(str(current_dir), adapter_name="current")
            peft_model.set_adapter("current")
            current, current_answers = judge(peft_model)
            peft_model.set_adapter("default")
            current_name = request.adapter
        else:
            with peft_model.disable_adapter():
                current, current_answers = judge(peft_model)
            current_name = request.model if not request.adapter else f"{request.model} (base; adapter " \
                f"{request.adapter} not found in {self.settings.adapters_dir})"
        timings["evaluation"] = time.monotonic() - started - timings["dataset"] - timings["training"]
        decision = decide(candidate, current, training.gate)
        samples = [Sample(question=e.messages[-1][1], target=e.target, candidate=c, current=b)
                   for e, c, b in list(zip(dataset.heldout, candidate_answers, current_answers, strict=False))[:5]]
        evaluation = EvaluationRecord(current_name=current_name, candidate=candidate, current=current, samples=samples)
        shutil.rmtree(staging.parent / "trainer", ignore_errors=True)
        return result, evaluation, decision

    def prune(self, model: str, keep: str) -> None:
        """Old adapters of `model` beyond `keep_adapters` go; never one in service, never the newest."""
        adapters = self.settings.adapters_dir
        try:
            serving = serving_adapters(self.settings)
        except LlmwatchError as exc:
            log.warning("not pruning old adapters: which ones serve is unknown (%s)", exc)
            return
        names = [p.name for p in adapters.iterdir() if p.is_dir()]
        for name in adapters_to_delete(names, model, self.training.keep_adapters, serving | {keep}):
            log.info("deleting old adapter %s (keeping %d per model)", name, self.training.keep_adapters)
            shutil.rmtree(adapters / name, ignore_errors=True)


def remove_partial(adapters_dir: Path) -> list[str]:
    """Scratch folders a killed run left behind; never offered, removed when a trainer starts."""
    if not adapters_dir.is_dir():
        return []
    gone = [p for p in adapters_dir.iterdir() if p.name.startswith(PARTIAL_PREFIX)]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in gone]

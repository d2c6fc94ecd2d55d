"""The worker, wired in one file: every Faust agent, task and timer, and what each hands its batch to.

This and `views.py` are the only modules of `processors/` that touch `streams/`: the rest are functions
over batches (and the small protocols in `ports.py`), testable without a broker or a store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import faust
from faust.types import Message
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from processors.alerting.engine import DEFAULT_RULES, AlertEngine, RulesSource
from processors.alerting.webhooks import WebhookSender
from processors.embedding import Embedder
from processors.ingest import Ingest
from processors.pricing import PriceBook
from processors.resources import Throughput
from processors.scoring import Scorers, scored_rows
from processors.scrape import ResourceScraper
from processors.telemetry import WorkerMetrics
from processors.text_signals import GroupLexicon
from processors.toxicity import load_toxicity_scorer
from processors.validation import Limits, RawRecord, decode
from processors.views import register_views
from processors.window_job import WindowJob, WindowPlan
from schemas.errors import ConfigurationError
from schemas.events import (
    AlertEvent,
    AuditEvent,
    DeploymentEvent,
    Event,
    FeedbackEvent,
    InferenceEvent,
    MetricPoint,
    ModelCandidateEvent,
    ScoredInferenceEvent,
    SilenceEvent,
    TrainingRunEvent,
)
from schemas.topics import destination
from streams.kafka.app import create_app
from streams.kafka.topics import ensure_topics
from streams.kafka.transport import App
from streams.processes import detach_from_terminal
from streams.settings import Settings
from streams.store.alerts import StoreAlertReader
from streams.store.remote import RemoteStore
from streams.store.runner import Store, StoreRunner
from streams.store.sql import running_worker
from streams.store.windows import StoreWindowReader
from streams.store.writer import ClickHouseWriter
from streams.worker_processes import WorkerProcesses

log = logging.getLogger(__name__)


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    """Values stay bytes: decoding is ours, so a poison message becomes a dead letter, not a crash."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def publisher(app: faust.App, settings: Settings) -> Callable[[Sequence[Event]], Awaitable[None]]:
    """Publish events where `schemas.topics.destination` says, and wait until Kafka has them all."""

    async def publish(events: Sequence[Event]) -> None:
        pending = []
        for event in events:
            topic, key = destination(event, settings.topics)
            pending.append(await raw_topic(app, topic).send(key=key, value=event.model_dump_json().encode()))
        await asyncio.gather(*pending)

    return publish


def kafka_timestamp_ms(message: Message) -> int | None:
    """The record's own timestamp (Faust gives seconds), which a replay reads back unchanged."""
    return round(message.timestamp * 1000) if message.timestamp and message.timestamp > 0 else None


def consumer_lag(app: faust.App) -> dict[tuple[str, int], int]:
    """High watermark (from the last fetch) minus committed offset, per partition this worker holds; a
    partition neither fetched nor committed yet is left out rather than guessed."""
    try:
        consumer = app.consumer
        assigned = consumer.assignment()
    except Exception:  # not started, or between rebalances: nothing to say yet
        return {}
    lag = {}
    for tp in assigned:
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            continue
        committed = app.monitor.tp_committed_offsets.get(tp)
        if committed is None:
            read = app.monitor.tp_read_offsets.get(tp)
            committed = None if read is None else read + 1
        if highwater is not None and committed is not None:
            lag[(tp.topic, tp.partition)] = max(highwater - committed, 0)
    return lag


def register_ingest(app: App, settings: Settings, ingest: Ingest) -> None:
    inputs: list[tuple[str, type[Event]]] = [
        (settings.topics.inference, InferenceEvent),
        (settings.topics.feedback, FeedbackEvent),
        (settings.topics.metrics, MetricPoint),
        (settings.topics.alerts, AlertEvent),
        (settings.topics.silences, SilenceEvent),
        (settings.topics.training, TrainingRunEvent),
        (settings.topics.models, ModelCandidateEvent),
        (settings.topics.audit, AuditEvent),
        (settings.topics.deployments, DeploymentEvent),
    ]
    for topic_name, model in inputs:

        async def store(batch: list[Message], model: type[Event] = model) -> None:
            await ingest([RawRecord(m.topic, m.partition, m.offset, m.value, kafka_timestamp_ms(m))
                          for m in batch], model)

        app.batch_agent(raw_topic(app, topic_name), store, max_size=settings.ingest_batch_size,
                        within=settings.ingest_flush_seconds)


def register_metrics(app: faust.App, job: WindowJob, embedder: Embedder | None) -> None:
    """Windows are computed by the leader only: one worker emits each point, however many run.

    The tick is short so that a window is computed within a quarter second of its end plus lateness: an
    alert can be no faster than the metric behind it. A tick with no window closed costs a comparison.
    """

    @app.timer(interval=0.25, on_leader=True)
    async def compute_closed_windows() -> None:
        await job.tick()

    if embedder is not None:

        @app.task
        async def embed_samples() -> None:
            await embedder.run()


def register_alerts(app: App, settings: Settings, engine: AlertEngine, limits: Limits) -> None:
    """Every worker judges the metric points of its partitions; a window's points for one series share one.

    What is not a valid point is skipped here: the ingest agent on the same topic dead-letters it.
    """

    async def judge_points(batch: list[Message]) -> None:
        decoded = [decode(RawRecord(m.topic, m.partition, m.offset, m.value, kafka_timestamp_ms(m)),
                          MetricPoint, limits) for m in batch]
        await engine.offer([p for p in decoded if isinstance(p, MetricPoint)])

    app.batch_agent(raw_topic(app, settings.topics.metrics), judge_points,
                    max_size=settings.ingest_batch_size, within=0.1)

    @app.task
    async def resume_series() -> None:
        await engine.start()

    @app.timer(interval=settings.alerts.reload_seconds)
    async def judge_quiet_series() -> None:
        await engine.tick()


def build(settings: Settings, store: Store, on_ready: Callable[[], None] | None = None,
          ) -> tuple[faust.App, Embedder | None]:
    """`on_ready` runs once this worker serves its web port and, as the store's owner, has said where."""
    app = create_app(settings)
    owner = settings.worker_index == 0
    publish = publisher(app, settings)
    telemetry = WorkerMetrics()
    writer = ClickHouseWriter(store, max_rows=settings.insert_max_rows,
                              max_backoff_seconds=settings.retry_max_backoff_seconds,
                              observe_insert=telemetry.observe_insert)
    metrics = settings.metrics
    lexicon = GroupLexicon.load(metrics.group_lexicon)
    cost, resources = settings.cost, settings.resources
    throughput = Throughput(resources.utilisation_window_seconds)
    prices = PriceBook.from_settings(
        {name: price.model_dump() for name, price in cost.models.items()},
        {name: price.model_dump() for name, price in cost.adapters.items()},
        {name: spec.model_dump() for name, spec in cost.self_hosted.items()}, cost.use_price_table,
        measured=throughput.tokens_per_second)
    scorers = Scorers(load_toxicity_scorer(metrics), metrics.toxicity_threshold, lexicon,
                      SentimentIntensityAnalyzer(), prices, metrics.sentiment_sample)
    embedder = None
    if metrics.embed_per_second > 0 and owner:  # one 600 MB embedder is enough; it samples the owner's partitions
        embedder = Embedder(metrics.embedding_model, writer, rate=metrics.embed_per_second,
                            on_process_start=detach_from_terminal)
        embedder.load(wait=False)
    limits = Limits(settings.max_event_bytes, settings.dead_letter_raw_bytes,
                    retention_days={kind.removesuffix("_days"): days
                                    for kind, days in settings.retention.model_dump().items()})
    ingest = Ingest(
        writer, publish, limits,
        enrich={InferenceEvent: (ScoredInferenceEvent, partial(scored_rows, scorers=scorers))},
        observe={InferenceEvent: embedder.offer} if embedder else {},  # type: ignore[dict-item]
    )
    register_ingest(app, settings, ingest)
    plan = WindowPlan(
        window_seconds=metrics.window_seconds, lateness_seconds=metrics.lateness_seconds,
        feedback_horizon_seconds=metrics.feedback_horizon_seconds,
        drift_reference_size=metrics.drift_reference_size, drift_min_window_samples=metrics.drift_min_window_samples,
        bias_min_samples=metrics.bias_min_samples, bias_attributes=("cohort", "language", *lexicon.categories()),
        top_users=settings.cost.top_users,
    )
    register_metrics(app, WindowJob(StoreWindowReader(store), publish, plan, observe=telemetry.observe_window),
                     embedder)
    engine, webhooks = None, None
    if settings.alerts.enabled:
        alerts = settings.alerts
        webhooks = WebhookSender(timeout_seconds=alerts.webhook_timeout_seconds,
                                 max_attempts=alerts.webhook_max_attempts,
                                 max_backoff_seconds=alerts.webhook_max_backoff_seconds)
        engine = AlertEngine(RulesSource(alerts.rules_file or DEFAULT_RULES), StoreAlertReader(store), writer,
                             publish, webhooks, complete_timeout_seconds=alerts.complete_timeout_seconds,
                             audit=publish)
        register_alerts(app, settings, engine, limits)
    telemetry.count(ingest, writer.stats, partial(consumer_lag, app), engine, webhooks)
    if resources.scrape_seconds:
        scraper = ResourceScraper(settings.vllm_urls, resources.scrape_seconds, publish,
                                  lag=partial(consumer_lag, app), throughput=throughput, is_leader=app.is_leader,
                                  timeout_seconds=resources.timeout_seconds,
                                  api_key=settings.serving.vllm_api_key.get_secret_value())

        @app.timer(interval=resources.scrape_seconds)
        async def scrape_resources() -> None:
            await scraper.tick()
    token = secrets.token_urlsafe(24)
    register_views(app, store, ingest, writer, token, telemetry.registry, embedder,
                   serve_store=owner and settings.embedded_store and settings.worker_processes > 1)

    @app.task
    async def announce() -> None:
        """Tell `llmwatch sql` (and `llmwatch demo`, and the other worker processes) where this worker, the
        store's owner, answers."""
        info = {"pid": os.getpid(), "url": f"http://{settings.web_host}:{settings.web_port}", "token": token}
        if owner:
            settings.worker_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(settings.worker_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                json.dump(info, file)
        log.info("llmwatch worker %d ready: %s, store %s", settings.worker_index, info["url"], store.dsn)
        if on_ready is not None:
            on_ready()

    return app, embedder


WORKER_STOP_SECONDS = 60.0
"""How long the owner waits for its other processes to store their last batch before it kills them."""


class _Worker(faust.Worker):
    def stop_and_shutdown(self) -> None:
        """mode exits with 1 and says nothing when stopping raises: say what it was."""
        try:
            super().stop_and_shutdown()
        except Exception:
            log.exception("the worker did not stop cleanly")
            raise


def open_store(settings: Settings) -> Store:
    """This process's own store, or, for a process `llmwatch worker --processes N` started while the store is
    embedded, the store through the process that started it (it announced itself before starting this one)."""
    if settings.worker_index == 0 or not settings.embedded_store:
        runner = StoreRunner(settings.store_dsn)
        version = runner.open(settings.retention)
        log.info("store %s at schema version %d", runner.dsn, version)
        return runner
    owner = running_worker(settings)
    if owner is None or owner["pid"] != os.getppid():
        raise ConfigurationError(f"LLMWATCH_WORKER_INDEX={settings.worker_index} is for the processes that "
                                 "`llmwatch worker --processes N` starts itself; run `llmwatch worker` without it")
    return RemoteStore(owner["url"], owner["token"])


def run_worker(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; the Faust worker stops the agents after their current batch. With
    `worker_processes` above 1 this process starts the others, and stops them before its own store."""
    ensure_topics(settings.bootstrap_servers, settings.topics)
    store = open_store(settings)
    processes = WorkerProcesses(settings) if settings.worker_processes > 1 else None
    app, embedder = build(settings, store, on_ready=processes.start if processes else None)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types handlers as returning None | Awaitable
    async def stop_processes(sender: Any, *args: Any, **kwargs: Any) -> None:
        """Their last batches still reach the store: the web server stops after this."""
        if processes is not None:
            await asyncio.get_running_loop().run_in_executor(None, processes.stop, WORKER_STOP_SECONDS)
        if isinstance(store, RemoteStore):
            await store.close()

    worker = _Worker(app, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        if processes is not None:
            processes.stop(WORKER_STOP_SECONDS)
        if embedder is not None:
            embedder.close()
        if settings.worker_file.exists() and json.loads(settings.worker_file.read_text()).get("pid") == os.getpid():
            settings.worker_file.unlink()
        if isinstance(store, StoreRunner):
            store.close()

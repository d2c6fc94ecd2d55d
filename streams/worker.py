"""A worker process: topics, store, agents and web views wired together, then run until stopped."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Sequence
from functools import partial

import faust
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from processors.agents import raw_topic, register_ingest, register_metrics
from processors.embedding import Embedder
from processors.ingest import Ingest
from processors.scoring import Scorers, scored_rows
from processors.text_signals import GroupLexicon
from processors.toxicity import load_toxicity_scorer
from processors.validation import Limits
from processors.window_job import WindowJob
from schemas.events import DeadLetterEvent, InferenceEvent, MetricPoint, ScoredInferenceEvent
from streams.app import create_app
from streams.settings import Settings
from streams.store_runner import StoreRunner
from streams.topics import ensure_topics
from streams.web import register_views
from streams.writer import ClickHouseWriter

log = logging.getLogger(__name__)


def build(settings: Settings, store: StoreRunner) -> tuple[faust.App, Embedder | None]:
    app = create_app(settings)
    deadletter_topic = raw_topic(app, settings.topics.deadletter)

    async def publish_dead_letters(letters: Sequence[DeadLetterEvent]) -> None:
        pending = [
            await deadletter_topic.send(key=letter.origin_topic.encode(), value=letter.model_dump_json().encode())
            for letter in letters
        ]
        await asyncio.gather(*pending)

    metrics_topic = raw_topic(app, settings.topics.metrics)

    async def publish_metrics(points: Sequence[MetricPoint]) -> None:
        pending = [await metrics_topic.send(key=point.model.encode(), value=point.model_dump_json().encode())
                   for point in points]
        await asyncio.gather(*pending)

    writer = ClickHouseWriter(
        store, max_rows=settings.insert_max_rows, max_backoff_seconds=settings.retry_max_backoff_seconds
    )
    lexicon = GroupLexicon.load(settings.metrics.group_lexicon)
    scorers = Scorers(load_toxicity_scorer(settings.metrics), settings.metrics.toxicity_threshold, lexicon,
                      SentimentIntensityAnalyzer())
    embedder = None
    if settings.metrics.embed_per_second > 0:
        embedder = Embedder(settings.metrics.embedding_model, writer, rate=settings.metrics.embed_per_second)
        embedder.load()
    ingest = Ingest(
        writer, publish_dead_letters, Limits(settings.max_event_bytes, settings.dead_letter_raw_bytes),
        enrich={InferenceEvent: (ScoredInferenceEvent, partial(scored_rows, scorers=scorers))},
        observe={InferenceEvent: embedder.offer} if embedder else {},  # type: ignore[dict-item]
    )
    register_ingest(app, settings, ingest)
    job = WindowJob(store, publish_metrics, settings.metrics, ["cohort", "language", *lexicon.categories()])
    register_metrics(app, job, embedder)
    token = secrets.token_urlsafe(24)
    register_views(app, store, ingest, writer, token)

    @app.task
    async def announce() -> None:
        """Tell `llmwatch sql` (and `llmwatch demo`) where this worker, the store's owner, answers."""
        settings.worker_file.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "url": f"http://{settings.web_host}:{settings.web_port}", "token": token}
        fd = os.open(settings.worker_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(info, file)
        log.info("llmwatch worker ready: %s, store %s", info["url"], store.dsn)

    return app, embedder


def run_worker(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; the Faust worker stops the agents after their current batch."""
    ensure_topics(settings.bootstrap_servers, settings.topics)
    store = StoreRunner(settings.store_dsn)
    version = store.open(settings.retention)
    log.info("store %s at schema version %d", store.dsn, version)
    app, embedder = build(settings, store)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        if embedder is not None:
            embedder.close()
        if settings.worker_file.exists() and json.loads(settings.worker_file.read_text()).get("pid") == os.getpid():
            settings.worker_file.unlink()
        store.close()

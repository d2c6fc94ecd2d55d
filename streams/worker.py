"""A worker process: topics, store, agents and web views wired together, then run until stopped."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Sequence

import faust

from processors.agents import raw_topic, register_ingest
from processors.ingest import Ingest
from processors.validation import Limits
from schemas.events import DeadLetterEvent
from streams.app import create_app
from streams.settings import Settings
from streams.store_runner import StoreRunner
from streams.topics import ensure_topics
from streams.web import register_views
from streams.writer import ClickHouseWriter

log = logging.getLogger(__name__)


def build(settings: Settings, store: StoreRunner) -> faust.App:
    app = create_app(settings)
    deadletter_topic = raw_topic(app, settings.topics.deadletter)

    async def publish_dead_letters(letters: Sequence[DeadLetterEvent]) -> None:
        pending = [
            await deadletter_topic.send(key=letter.origin_topic.encode(), value=letter.model_dump_json().encode())
            for letter in letters
        ]
        await asyncio.gather(*pending)

    writer = ClickHouseWriter(
        store, max_rows=settings.insert_max_rows, max_backoff_seconds=settings.retry_max_backoff_seconds
    )
    ingest = Ingest(writer, publish_dead_letters, Limits(settings.max_event_bytes, settings.dead_letter_raw_bytes))
    register_ingest(app, settings, ingest)
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

    return app


def run_worker(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; the Faust worker stops the agents after their current batch."""
    ensure_topics(settings.bootstrap_servers, settings.topics)
    store = StoreRunner(settings.store_dsn)
    version = store.open(settings.retention)
    log.info("store %s at schema version %d", store.dsn, version)
    app = build(settings, store)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        if settings.worker_file.exists() and json.loads(settings.worker_file.read_text()).get("pid") == os.getpid():
            settings.worker_file.unlink()
        store.close()

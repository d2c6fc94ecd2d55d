"""Every Faust agent is registered here, in one place; each only turns Kafka events into a batch call."""

from __future__ import annotations

import faust

from processors.embedding import Embedder
from processors.ingest import Ingest
from processors.validation import RawRecord
from processors.window_job import WindowJob
from schemas.events import Event, FeedbackEvent, InferenceEvent, MetricPoint
from streams.settings import Settings


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    """Values stay bytes: decoding is ours, so a poison message becomes a dead letter, not a crash."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def register_ingest(app: faust.App, settings: Settings, ingest: Ingest) -> None:
    inputs: list[tuple[str, type[Event]]] = [
        (settings.topics.inference, InferenceEvent),
        (settings.topics.feedback, FeedbackEvent),
        (settings.topics.metrics, MetricPoint),
    ]
    for topic_name, model in inputs:

        async def agent(stream: faust.StreamT, model: type[Event] = model) -> None:
            # take_events acks a batch only when the loop asks for the next one: after it is stored.
            async for batch in stream.take_events(settings.ingest_batch_size, within=settings.ingest_flush_seconds):
                records = [RawRecord(e.message.topic, e.message.partition, e.message.offset, e.value) for e in batch]
                await ingest(records, model)

        agent.__name__ = agent.__qualname__ = f"ingest_{model.table}"
        app.agent(raw_topic(app, topic_name), name=agent.__name__)(agent)


def register_metrics(app: faust.App, job: WindowJob, embedder: Embedder | None) -> None:
    """Windows are computed by the leader only: one worker emits each point, however many run."""

    @app.timer(interval=1.0, on_leader=True)
    async def compute_closed_windows() -> None:
        await job.tick()

    if embedder is not None:

        @app.task
        async def embed_samples() -> None:
            await embedder.run()

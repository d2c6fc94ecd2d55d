"""Routes are events: every gateway applies the route changes on llm.deployments, so any number agree.

A gateway that starts rebuilds the current routes from the deployments table (through the worker that owns
the store: the table keeps changes longer than the topic), then reads the topic from its beginning (it is
small: one event per change): a change published but not yet stored is read from Kafka, one already applied
is skipped by its timestamp. Seeking by time or to the end is not used, since the embedded broker answers
end offsets wrongly (ENVIRONMENT.md). Per route only a change at least as new as the last one applied takes
effect, so the order in which the table and the topic deliver them does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from clickhouse_connect.driver.binding import finalize_query
from pydantic import ValidationError

from schemas.events import DeploymentEvent
from serving.gateway.routing import Router
from streams.settings import Settings
from streams.store.sql import query

log = logging.getLogger(__name__)

class RouteLog:
    """Applies route events to a router, each route only forward in time."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.applied: dict[str, datetime] = {}

    def apply(self, event: DeploymentEvent) -> bool:
        if not event.route or event.status != "succeeded" or event.base_model != self.router.base_model:
            return False
        last = self.applied.get(event.route)
        if last is not None and event.timestamp < last:
            return False
        try:
            if event.weights:
                self.router.set_route(event.route, event.weights)
            else:
                self.router.delete_route(event.route)
        except ValueError as exc:
            log.error("route change %s for %r ignored, it is not valid: %s", event.event_id, event.route, exc)
            return False
        self.applied[event.route] = event.timestamp
        log.info("route %r set to %s (%s by %s)", event.route, event.weights or "removed", event.action,
                 event.actor or "?")
        return True


def current_routes_sql(base_model: str) -> str:
    """Per route, the weights of its latest succeeded change (empty: removed) and that change's time."""
    return finalize_query(
        "SELECT route, argMax(weights, (timestamp, event_id)), toUnixTimestamp64Milli(max(timestamp)) "
        "FROM deployments FINAL WHERE route != '' AND status = 'succeeded' AND base_model = %(model)s "
        "GROUP BY route ORDER BY route", {"model": base_model})


def events_from_rows(base_model: str, rows: Iterable[Sequence[Any]]) -> list[DeploymentEvent]:
    return [DeploymentEvent(deployment_id="rebuild", base_model=base_model, action="route", status="succeeded",
                            route=route, weights={k: float(v) for k, v in dict(weights).items()},
                            timestamp=datetime.fromtimestamp(int(millis) / 1000, tz=UTC), actor="table")
            for route, weights, millis in rows]


def rebuild(settings: Settings, log_: RouteLog) -> bool:
    """True when the table answered and its routes are applied; without it the topic alone rebuilds them."""
    try:
        result = query(settings, current_routes_sql(log_.router.base_model), timeout=15, open_store=False)
    except Exception as exc:  # no worker, store down: the topic still has every change
        log.warning("routes not rebuilt from the deployments table (%s): only llm.deployments rebuilds them", exc)
        return False
    for event in events_from_rows(log_.router.base_model, result.rows):
        log_.apply(event)
    return True


class RouteFeed:
    """The gateway's task that follows llm.deployments; it retries a missing broker and never stops the gateway."""

    def __init__(self, settings: Settings, router: Router) -> None:
        self.settings = settings
        self.log = RouteLog(router)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(rebuild, self.settings, self.log)
        self._task = asyncio.create_task(self._run(), name="llmwatch-route-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                        enable_auto_commit=False, fetch_max_wait_ms=200)
            try:
                await consumer.start()
                await self._seek(consumer)
                backoff = 0.5
                async for message in consumer:
                    self._handle(message.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("following llm.deployments failed (%r); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_seconds)
            finally:
                await consumer.stop()

    async def _seek(self, consumer: AIOKafkaConsumer) -> None:
        topic = self.settings.topics.deployments
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            raise RuntimeError(f"topic {topic} does not exist yet (the worker creates it)")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)

    def _handle(self, value: bytes | None) -> None:
        try:
            event = DeploymentEvent.model_validate_json(value or b"")
        except ValidationError as exc:
            log.warning("a message on llm.deployments is not a deployment event, skipped: %s", exc)
            return
        self.log.apply(event)

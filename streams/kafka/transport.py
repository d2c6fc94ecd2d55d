"""Faust's aiokafka transport, with the consumer's fetch wait taken from settings and batch routes.

Faust fixes `fetch_max_wait_ms` at 1500. Kafka answers a fetch as soon as data arrives, so there the
wait costs nothing; Tansu, the embedded broker, holds a fetch that found nothing for the whole wait,
which added up to 1.5 s to every event's latency. aiokafka reads the value when its fetcher starts.

The fetch loop (`_drain_messages`) is Faust's, but a message of a topic with a batch route
(`streams.kafka.batches`) goes to that route's list instead of through a stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import aiokafka
import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TopicT, TransportT
from mode import Seconds, Service, ServiceT

from streams.kafka.batches import BatchHandler, BatchRoute

log = logging.getLogger(__name__)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]  # our App has it
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _run_route(self, route: BatchRoute) -> None:
        """Hand each batch to the route's handlers, then acknowledge it: only then may Faust commit it."""
        app = cast(App, self.app)
        while not self.should_stop:
            batch = await route.next_batch()
            generation = app.consumer_generation_id
            current = [m for m in batch if m.generation_id == generation]
            for stale in (m for m in batch if m.generation_id != generation):
                self._unacked_messages.discard(stale)  # read again from the committed offset
            if not current:
                continue
            try:
                for handler in route.handlers:
                    await handler(current)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.exception("batch handler of %s raised; stopping the worker unacknowledged: %r",
                                   route.topic, exc)
                await self.crash(exc)
                return
            for message in current:
                self.ack(message)

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover
        # Faust's own loop (faust/transport/consumer.py), with the batch-route branch added.
        routes = cast(App, self.app).batch_routes
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        track_message = self.track_message
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            route = routes.get(tp.topic)
                            if route is None:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            else:
                                if route.task is None or route.task.done():
                                    route.task = self.add_future(self._run_route(route))
                                track_message(message)
                                if not route.add(message):
                                    await self.wait_first(route.room.wait(), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class Ticks:
    """Timer ticks in progress: `close()` waits for them, and after it a tick does nothing.

    Faust stops the producer without waiting for its timers: a window pass that was waiting on the store
    then publishes into a stopped producer, which crashes the app, and the worker exits 1.
    """

    def __init__(self) -> None:
        self._running = 0
        self._none_running = asyncio.Event()
        self._none_running.set()
        self._closed = False

    def guard(self, fun: Callable[..., Awaitable[None]]) -> Callable[..., Coroutine[Any, Any, None]]:
        @functools.wraps(fun)
        async def tick(*args: Any) -> None:
            if self._closed:
                return
            self._running += 1
            self._none_running.clear()
            try:
                await fun(*args)
            finally:
                self._running -= 1
                if not self._running:
                    self._none_running.set()

        return tick

    async def close(self, timeout: float = 30.0) -> None:
        """A tick still running after `timeout` (one waiting out an unreachable store) is left to be cancelled."""
        self._closed = True
        try:
            await asyncio.wait_for(self._none_running.wait(), timeout)
        except TimeoutError:
            log.warning("%d timer tick(s) still running after %g s: stopping without them", self._running, timeout)


class App(faust.App):
    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.batch_routes: dict[str, BatchRoute] = {}
        self.ticks = Ticks()
        super().__init__(*args, **kwargs)

    def timer(self, interval: Seconds, on_leader: bool = False, traced: bool = True,  # type: ignore[override]
              name: str | None = None, max_drift_correction: float = 0.1) -> Callable[..., Any]:
        """Faust's timer, but a tick in progress finishes before the app stops (see `Ticks`)."""
        faust_timer = super().timer(interval, on_leader, traced, name, max_drift_correction)
        return lambda fun: faust_timer(self.ticks.guard(fun))

    async def on_stop(self) -> None:
        await self.ticks.close()
        await super().on_stop()

    def batch_agent(self, topic: TopicT, handler: BatchHandler, *, max_size: int, within: float) -> None:
        """Consume `topic` (one name) in batches: `handler` gets up to `max_size` messages, or what came
        within `within` seconds of the first, raw (`Message.value` is bytes); they are acknowledged when
        every handler of the topic has returned. Several handlers on one topic share its batches."""
        (name,) = topic.topics
        route = self.batch_routes.get(name)
        if route is None:
            route = self.batch_routes[name] = BatchRoute(name, max_size, within)
            self.topics.add(topic)
        route.max_size = min(route.max_size, max_size)
        route.within = min(route.within, within)
        route.handlers.append(handler)

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)

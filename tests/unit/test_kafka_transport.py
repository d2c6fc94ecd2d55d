import asyncio
from typing import Any

from streams.kafka.app import create_app
from streams.kafka.batches import BatchRoute
from streams.settings import Settings


def test_the_consumer_fetch_wait_comes_from_settings() -> None:
    async def fetch_wait() -> int:
        app = create_app(Settings(kafka_fetch_max_wait_ms=123, _env_file=None))
        consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(fetch_wait()) == 123


def test_a_batch_route_hands_over_at_most_max_size_and_flushes_the_rest_after_within() -> None:
    async def batches() -> tuple[list[list[Any]], bool]:
        route = BatchRoute("t", max_size=2, within=0.05)
        room = [route.add(n) for n in range(5)]  # type: ignore[arg-type]  # any object stands for a message
        taken = [await route.next_batch() for _ in range(3)]
        return taken, room == [True, True, True, False, False] and route.room.is_set()

    taken, room_then_full_then_freed = asyncio.run(batches())
    assert taken == [[0, 1], [2, 3], [4]]
    assert room_then_full_then_freed


def test_the_app_stops_only_after_the_timer_tick_in_progress_and_starts_no_other() -> None:
    """A window pass waiting on the store when the worker stops must still publish before the producer goes."""

    async def stop_during_a_tick() -> tuple[list[str], bool]:
        app = create_app(Settings(_env_file=None))
        steps: list[str] = []
        inside, release = asyncio.Event(), asyncio.Event()

        async def window_pass() -> None:
            steps.append("tick")
            inside.set()
            await release.wait()
            steps.append("published")

        tick = app.ticks.guard(window_pass)  # what app.timer runs each interval
        first = asyncio.create_task(tick())
        await inside.wait()
        stopping = asyncio.create_task(app.on_stop())
        await asyncio.sleep(0.05)
        waited = not stopping.done()
        release.set()
        await asyncio.gather(first, stopping)
        await tick()
        return steps, waited

    steps, waited = asyncio.run(stop_during_a_tick())
    assert waited, "the app stopped while a tick was in progress"
    assert steps == ["tick", "published"]

import asyncio

from streams.kafka.app import create_app
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

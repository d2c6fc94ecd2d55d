"""The Faust app factory: broker, consumer group and timeouts come from settings, nothing else."""

from __future__ import annotations

from faust.tables import TableManager

from streams.kafka.transport import App
from streams.settings import Settings


class TablesAtOnce(TableManager):
    """Faust's table manager without the fixed one-second sleep it starts with.

    Faust sleeps so that tables defined while the app starts can still register; llmwatch defines no Faust
    tables, and that second was a sixth of a worker's start to ready (about 6.5 s on 2 cores).
    """

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def create_app(settings: Settings) -> App:
    session = settings.kafka_session_timeout_seconds
    return App(
        settings.app_id,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        store="memory://",
        datadir=str(settings.faust_dir),
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=session,
        broker_heartbeat_interval=max(session / 6, 0.5),
        broker_rebalance_timeout=session + 4,
        broker_commit_interval=1.0,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        TableManager=TablesAtOnce,
    )

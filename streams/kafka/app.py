"""The Faust app factory: broker, consumer group and timeouts come from settings, nothing else."""

from __future__ import annotations

from streams.kafka.transport import App
from streams.settings import Settings


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
    )

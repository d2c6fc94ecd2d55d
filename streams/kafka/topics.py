"""Create llmwatch's topics on whichever broker is configured; existing topics are left as they are."""

from __future__ import annotations

import contextlib
import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.errors import BrokerError
from streams.settings import Topics

log = logging.getLogger(__name__)


def ensure_topics(bootstrap_servers: str, topics: Topics) -> list[str]:
    """Create the missing topics; returns the names that were created."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="llmwatch-admin")
    except KafkaError as exc:
        raise BrokerError(
            f"cannot reach Kafka at {bootstrap_servers}: {exc}. "
            "Start it, or unset LLMWATCH_KAFKA_BOOTSTRAP_SERVERS to use the embedded broker"
        ) from exc
    try:
        missing = [name for name in topics.names() if name not in set(admin.list_topics())]
        if missing:
            new = [NewTopic(name, topics.partitions, topics.replication_factor) for name in missing]
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                admin.create_topics(new)
            log.info("created topics %s", ", ".join(missing))
        return missing
    except KafkaError as exc:
        raise BrokerError(f"creating topics on {bootstrap_servers} failed: {exc}") from exc
    finally:
        admin.close()

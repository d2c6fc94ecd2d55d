"""The worker's Prometheus metrics (`GET /metrics`), in a registry of its own.

Counts that the worker keeps anyway (ingest per batch, the writer per insert, the alert engine, webhook
delivery) are read when Prometheus scrapes, so the hot path pays nothing more for them; only the two
latencies are observed as they happen, once per insert and once per window computed. Labels are bounded:
topics, tables, dead-letter reasons, partitions, rules and states, webhook hosts; never event content.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from processors.alerting.engine import AlertEngine
from processors.alerting.webhooks import WebhookSender
from processors.ingest import Ingest

PREFIX = "llmwatch_worker"
_INSERT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_WINDOW_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

ConsumerLag = Callable[[], Mapping[tuple[str, int], int]]
"""(topic, partition) -> messages not yet committed by this worker, for the partitions it holds."""


class _TableStats(Protocol):
    rows: int
    inserts: int
    retries: int
    rejected: int


class _Counts(Collector):
    """Reads what the worker already counts, at scrape time."""

    def __init__(self, ingest: Ingest, writer_stats: Mapping[str, _TableStats], lag: ConsumerLag,
                 engine: AlertEngine | None, webhooks: WebhookSender | None) -> None:
        self.ingest = ingest
        self.writer_stats = writer_stats
        self.lag = lag
        self.engine = engine
        self.webhooks = webhooks

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest()
        yield from self._store()
        lag = GaugeMetricFamily(f"{PREFIX}_consumer_lag", "Messages on a partition this worker holds that it "
                                "has not committed yet (high watermark minus committed offset)",
                                labels=["topic", "partition"])
        for (topic, partition), behind in sorted(self.lag().items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
        if self.engine is not None:
            yield from self._alerts(self.engine)
        if self.webhooks is not None:
            yield from self._webhooks(self.webhooks)

    def _ingest(self) -> Iterator[Metric]:
        counters = {
            "received": CounterMetricFamily(f"{PREFIX}_events_received", "Messages taken from an input topic",
                                            labels=["topic"]),
            "stored": CounterMetricFamily(f"{PREFIX}_events_stored", "Messages stored as rows", labels=["topic"]),
            "dead_letters_unstored": CounterMetricFamily(
                f"{PREFIX}_dead_letters_unstored", "Dead letters the store refused too (on llm.deadletter only)",
                labels=["topic"]),
        }
        dead = CounterMetricFamily(f"{PREFIX}_events_dead_lettered", "Messages sent to the dead-letter topic",
                                   labels=["topic", "reason"])
        for topic, counts in sorted(self.ingest.by_topic.items()):
            for name, family in counters.items():
                family.add_metric([topic], getattr(counts, name))
            for reason, number in sorted(counts.by_reason.items()):
                dead.add_metric([topic, reason], number)
        yield from counters.values()
        yield dead

    def _store(self) -> Iterator[Metric]:
        families = {
            "rows": CounterMetricFamily(f"{PREFIX}_store_rows", "Rows inserted into ClickHouse", labels=["table"]),
            "inserts": CounterMetricFamily(f"{PREFIX}_store_inserts", "Inserts that succeeded", labels=["table"]),
            "retries": CounterMetricFamily(f"{PREFIX}_store_retries",
                                           "Inserts retried because the store was unavailable", labels=["table"]),
            "rejected": CounterMetricFamily(f"{PREFIX}_store_rejected_rows",
                                            "Rows the store refused (dead-lettered)", labels=["table"]),
        }
        for table, stats in sorted(self.writer_stats.items()):
            for name, family in families.items():
                family.add_metric([table], getattr(stats, name))
        yield from families.values()

    def _alerts(self, engine: AlertEngine) -> Iterator[Metric]:
        series = GaugeMetricFamily(f"{PREFIX}_alert_series", "Alert series by rule and state (series that have "
                                   "left ok at least once)", labels=["rule", "state"])
        counts: dict[tuple[str, str], int] = {}
        for state in engine.state.series.values():
            counts[(state.rule, state.status)] = counts.get((state.rule, state.status), 0) + 1
        for (rule, status), number in sorted(counts.items()):
            series.add_metric([rule, status], number)
        yield series
        yield CounterMetricFamily(f"{PREFIX}_alert_events", "Alert transitions published (firing, resolved, "
                                  "no_data)", value=engine.fired)

    def _webhooks(self, webhooks: WebhookSender) -> Iterator[Metric]:
        stats = webhooks.stats
        failed = CounterMetricFamily(f"{PREFIX}_webhook_failures", "Webhook attempts that failed (each is retried)",
                                     labels=["host"])
        by_host: dict[str, int] = {}
        for url, number in stats.by_url.items():
            host = urlsplit(url).hostname or "unknown"  # the path may hold a token: never a label
            by_host[host] = by_host.get(host, 0) + number
        for host, number in sorted(by_host.items()):
            failed.add_metric([host], number)
        yield failed
        yield CounterMetricFamily(f"{PREFIX}_webhooks_sent", "Alerts a webhook receiver accepted", value=stats.sent)
        yield CounterMetricFamily(f"{PREFIX}_webhooks_given_up", "Alerts given up on after every attempt failed",
                                  value=stats.given_up)
        yield GaugeMetricFamily(f"{PREFIX}_webhooks_queued", "Alerts waiting for their receiver", value=stats.queued)


class WorkerMetrics:
    """One per worker: the registry `/metrics` serves, and the two histograms observed as things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.insert_seconds = Histogram(f"{PREFIX}_store_insert_seconds", "One insert into ClickHouse, waiting "
                                        "for the store thread included", ["table"], buckets=_INSERT_BUCKETS,
                                        registry=self.registry)
        self.window_seconds = Histogram(f"{PREFIX}_window_compute_seconds", "Reading and computing one window's "
                                        "metrics (first pass, or the feedback-horizon pass)",
                                        ["window_seconds", "pass"], buckets=_WINDOW_BUCKETS, registry=self.registry)

    def observe_insert(self, table: str, seconds: float) -> None:
        self.insert_seconds.labels(table).observe(seconds)

    def observe_window(self, window_seconds: int, feedback_only: bool, seconds: float) -> None:
        self.window_seconds.labels(str(window_seconds), "feedback" if feedback_only else "first").observe(seconds)

    def count(self, ingest: Ingest, writer_stats: Mapping[str, Any], lag: ConsumerLag,
              engine: AlertEngine | None = None, webhooks: WebhookSender | None = None) -> None:
        self.registry.register(_Counts(ingest, writer_stats, lag, engine, webhooks))

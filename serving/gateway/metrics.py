"""The gateway's Prometheus metrics, in a registry of its own (one per app, so tests can build several).

Label values are bounded: endpoints and statuses are fixed sets; a model or adapter label is a name the
gateway knows (the base model, a route's target) or one vLLM served, plainly spelled, and at most
`MAX_ADAPTER_LABELS` of those: anything else a client sends is counted as "unknown", never kept as text.

With several gateway processes (`LLMWATCH_SERVING__GATEWAY_PROCESSES`), each counts in its own memory-mapped
files under `PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode, switched on by that variable,
which the supervisor sets to a fresh folder per run), and /metrics, whichever process answers it, adds up
all of them: counters and histograms summed, the spool and queue gauges summed over the live processes,
"Kafka connected" the lowest and "spool full" the highest of them.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MAX_ADAPTER_LABELS = 64
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")


class AdapterLabels:
    """Which adapter names may become label values: known ones, and the first few others vLLM served."""

    def __init__(self) -> None:
        self._served: set[str] = set()
        self._lock = threading.Lock()

    def label(self, name: str | None, *, known: Iterable[str], served: bool) -> str:
        if not name:
            return ""
        if name in known:
            return name
        if not served or not _PLAIN_NAME.fullmatch(name):
            return "unknown"
        with self._lock:
            if name in self._served or len(self._served) < MAX_ADAPTER_LABELS:
                self._served.add(name)
                return name
        return "unknown"

_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class GatewayMetrics:
    def __init__(self) -> None:
        self._multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # prometheus_client's own switch
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmwatch_gateway_requests", "Requests proxied to vLLM, by outcome",
                                ["endpoint", "model", "adapter", "status"], registry=r)
        self.latency = Histogram("llmwatch_gateway_request_seconds", "Request arrival to last byte",
                                 ["endpoint", "stream"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("llmwatch_gateway_ttft_seconds", "Request arrival to the first generated text",
                              ["endpoint", "stream"], buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("llmwatch_gateway_overhead_seconds",
                                  "Time the gateway adds to a non-streamed request (total minus vLLM's part)",
                                  ["endpoint"], buckets=_OVERHEAD_BUCKETS, registry=r)
        self.tokens = Counter("llmwatch_gateway_tokens", "Tokens, as vLLM counted them", ["kind"], registry=r)
        self.rejected = Counter("llmwatch_gateway_rejected", "Requests refused before vLLM (auth, bad body)",
                                ["reason"], registry=r)
        self.feedback = Counter("llmwatch_gateway_feedback", "Feedback accepted", registry=r)
        self.truncated = Counter("llmwatch_gateway_events_truncated",
                                 "Events whose text was cut to stay under max_event_bytes", registry=r)
        self.refused = Counter("llmwatch_gateway_events_refused",
                               "Events Kafka refused for a reason retrying cannot fix, set aside", ["reason"],
                               registry=r)
        self.adapters = AdapterLabels()
        self.published = Counter("llmwatch_gateway_events_published", "Events acknowledged by Kafka",
                                 ["topic"], registry=r)
        self.publish_errors = Counter("llmwatch_gateway_publish_errors",
                                      "Failed attempts to publish (each sends the events to the spool)", registry=r)
        self.dropped = Counter("llmwatch_gateway_events_dropped",
                               "Events lost: spool full, queue full, or not a valid event", ["reason"], registry=r)
        self.backpressure = Counter("llmwatch_gateway_backpressure_waits",
                                    "Requests that waited for room in a full event queue before going upstream",
                                    registry=r)
        self.spooled = Counter("llmwatch_gateway_events_spooled", "Events written to the on-disk spool", registry=r)
        self.spool_events = Gauge("llmwatch_gateway_spool_events", "Events in the spool, waiting for Kafka",
                                  multiprocess_mode="livesum", registry=r)
        self.spool_bytes = Gauge("llmwatch_gateway_spool_bytes", "Bytes in the spool", multiprocess_mode="livesum",
                                 registry=r)
        self.spool_full = Gauge("llmwatch_gateway_spool_full", "1 while the spool refuses events for lack of room",
                                multiprocess_mode="livemax", registry=r)
        self.queue_depth = Gauge("llmwatch_gateway_queue_events", "Events in memory, waiting to be published",
                                 multiprocess_mode="livesum", registry=r)
        self.kafka_up = Gauge("llmwatch_gateway_kafka_connected", "1 while the last publish to Kafka worked",
                              multiprocess_mode="livemin", registry=r)

    def exposition(self) -> bytes:
        """The text /metrics serves: this process's registry, or every process's files in multiprocess mode."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self._multiprocess_dir)
        return generate_latest(registry)

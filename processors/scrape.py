"""The scraping loop of the `resources` family: read each vLLM's /metrics, publish what `resources` makes of it.

Every worker scrapes (its self-hosted prices need the measured throughput) but only the leader publishes
vLLM points, so each is stored once; every worker publishes its own consumer lag. A tick's points share
one window: the interval's, floored. They carry no `window.series_complete` marker: their series (a
model, or '') is the window job's too, whose marker would then be taken twice; rules judge them
`complete_timeout_seconds` after they arrive (and `min_requests` does not apply to them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime

import httpx

from processors.resources import Throughput, VllmSample, down_values, lag_values, parse_vllm, up_values, vllm_values
from processors.windows import MetricValue, Window, floor_time, metric_point
from schemas.events import MetricPoint, utcnow

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[MetricPoint]], Awaitable[None]]


class ResourceScraper:
    def __init__(self, urls: Sequence[str], interval_seconds: int, publish: Publish, *,
                 lag: Callable[[], Mapping[tuple[str, int], int]], throughput: Throughput,
                 is_leader: Callable[[], bool], timeout_seconds: float = 5.0, api_key: str = "",
                 clock: Callable[[], datetime] = utcnow, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.urls = list(urls)
        self.interval = interval_seconds
        self.publish = publish
        self.lag = lag
        self.throughput = throughput
        self.is_leader = is_leader
        self.timeout = timeout_seconds
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.clock = clock
        self.monotonic = monotonic
        self.previous: dict[str, VllmSample] = {}
        self.down: set[str] = set()

    async def _scrape(self, client: httpx.AsyncClient, url: str) -> list[MetricValue]:
        try:
            response = await client.get(f"{url}/metrics", headers=self.headers)
            response.raise_for_status()
            sample = parse_vllm(response.text, self.monotonic())
        except (httpx.HTTPError, ValueError) as exc:
            if url not in self.down:
                log.warning("vLLM at %s gave no metrics (%s); vllm.up is 0 until it does", url, exc)
            self.down.add(url)
            self.previous.pop(url, None)
            return down_values(url)
        if url in self.down:
            log.info("vLLM at %s gives metrics again", url)
            self.down.discard(url)
        values = vllm_values(sample, self.previous.get(url), url)
        self.previous[url] = sample
        return up_values(url) + values

    async def tick(self) -> list[MetricPoint]:
        """One scrape round; returns what was published."""
        now = self.clock()
        window = Window(floor_time(now, self.interval), self.interval)
        served: list[MetricValue] = []
        if self.urls:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                for values in await asyncio.gather(*(self._scrape(client, url) for url in self.urls)):
                    served += values
        self.throughput.record(served)
        values = lag_values(self.lag()) + (served if self.is_leader() else [])
        points = [metric_point(window, value, now) for value in values]
        if points:
            try:
                await self.publish(points)
            except Exception:  # Kafka away: this round is lost, the next one says the same with fresh numbers
                log.warning("resource points of %s could not be published", window.start.isoformat(), exc_info=True)
                return []
        return points

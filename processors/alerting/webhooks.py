"""Webhook delivery in the Alertmanager webhook format, in the background, retried with capped backoff.

A slow or failing receiver never delays evaluation: alerts are queued per receiver (in order) and a task
per receiver sends them. Failures are logged and counted; after `max_attempts` an alert is given up on
(it stays in the alerts table and on llm.alerts, which are the record).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryError, stop_after_attempt, wait_random_exponential

from schemas.events import AlertEvent
from schemas.rules import Webhook

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Llmwatch-Signature"


def _time(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else "0001-01-01T00:00:00Z"


def alertmanager_body(events: Sequence[AlertEvent], receiver: str = "llmwatch") -> dict[str, Any]:
    """The body Alertmanager sends its webhook receivers (version 4), so existing receivers accept it."""
    alerts: list[dict[str, Any]] = [{
        "status": "resolved" if e.state == "resolved" else "firing",
        "labels": e.labels,
        "annotations": e.annotations,
        "startsAt": _time(e.starts_at),
        "endsAt": _time(e.ends_at),
        "generatorURL": "",
        "fingerprint": e.fingerprint,
    } for e in events]
    common = dict(set.intersection(*(set(a["labels"].items()) for a in alerts))) if alerts else {}
    return {
        "version": "4",
        "groupKey": json.dumps(sorted(common.items())),
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": {"alertname": common.get("alertname", "")},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": alerts,
    }


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class WebhookStats:
    sent: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    queued: int = 0
    by_url: dict[str, int] = field(default_factory=dict)


class WebhookSender:
    def __init__(self, *, timeout_seconds: float, max_attempts: int, max_backoff_seconds: float) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.max_attempts = max_attempts
        self.max_backoff_seconds = max_backoff_seconds
        self.stats = WebhookStats()
        self._queues: dict[str, asyncio.Queue[tuple[Webhook, AlertEvent]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def submit(self, webhook: Webhook, event: AlertEvent) -> None:
        """Never blocks: the alert waits in its receiver's queue."""
        url = str(webhook.url)
        if url not in self._queues:
            self._queues[url] = asyncio.Queue()
            self._tasks.append(asyncio.create_task(self._deliver(self._queues[url]), name=f"webhook {url}"))
        self._queues[url].put_nowait((webhook, event))
        self.stats.queued += 1

    async def _deliver(self, queue: asyncio.Queue[tuple[Webhook, AlertEvent]]) -> None:
        while True:
            webhook, event = await queue.get()
            self.stats.queued -= 1
            try:
                async for attempt in AsyncRetrying(
                        stop=stop_after_attempt(self.max_attempts),
                        wait=wait_random_exponential(multiplier=0.5, max=self.max_backoff_seconds)):
                    with attempt:
                        await self._post(webhook, event)
                self.stats.sent += 1
            except RetryError as exc:
                self.stats.given_up += 1
                log.error("webhook %s: gave up on alert %s (%s, %s) after %d attempts: %s", webhook.url,
                          event.rule, event.state, event.fingerprint, self.max_attempts, exc.last_attempt.exception())

    async def _post(self, webhook: Webhook, event: AlertEvent) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = json.dumps(alertmanager_body([event])).encode()
        headers = {"Content-Type": "application/json"}
        if webhook.secret is not None:
            headers[SIGNATURE_HEADER] = signature(webhook.secret.get_secret_value(), body)
        try:
            async with self._session.post(str(webhook.url), data=body, headers=headers) as response:
                if response.status >= 300:
                    raise aiohttp.ClientResponseError(response.request_info, (), status=response.status,
                                                      message=f"answered {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.stats.failed_attempts += 1
            url = str(webhook.url)
            self.stats.by_url[url] = self.stats.by_url.get(url, 0) + 1
            log.warning("webhook %s failed for alert %s (%s): %s", url, event.rule, event.state, exc)
            raise

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._session is not None:
            await self._session.close()

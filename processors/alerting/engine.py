"""Alert rules in the stream: points in, complete windows judged by `evaluate`, alerts out.

Points of a window reach llm.metrics in several batches. They wait here, per window and series, until
the series' `window.series_complete` point arrives (the window job sends it last, on the same partition),
so a rule is judged on a complete window and `min_requests` on that window's request count. Points of producers
that send no such marker (the bias probe, other tools) are judged `complete_timeout_seconds` after the
first of them arrived.

Order of effects, for at-least-once without repeats: alerts are published (and webhooks queued), then the
series state is stored, then the batch is acknowledged. A crash in between replays the points; the same
transitions produce alerts with the same ids, which the store collapses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from processors.alerting import DEFAULT_RULES
from processors.alerting.evaluation import AlertState, Evaluation, RuleSet, evaluate
from processors.alerting.webhooks import WebhookSender
from processors.ports import AlertStore, RowWriter
from processors.windows import SERIES_COMPLETE
from schemas.errors import ConfigurationError
from schemas.events import AlertEvent, AuditEvent, MetricPoint, utcnow
from schemas.rules import AlertRule, RulesError, RulesFile, load_rules

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_RULES", "AlertEngine", "RulesSource"]
PublishAlerts = Callable[[Sequence[AlertEvent]], Awaitable[None]]
PublishAudit = Callable[[Sequence[AuditEvent]], Awaitable[None]]
SeriesKey = tuple[datetime, int, str, str, str]


def _key(point: MetricPoint) -> SeriesKey:
    return point.window_start, point.window_seconds, point.model, point.adapter, point.prompt_version


class RulesSource:
    """The rules file, re-read when it changes; an invalid edit is refused and the previous rules kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest = ""
        self.rules = self._read()

    def _read(self) -> RulesFile:
        try:
            rules = load_rules(self.path)
        except RulesError as exc:
            raise ConfigurationError(f"{exc}\nFix the file (`llmwatch rules check {self.path}`), or point "
                                     "LLMWATCH_ALERTS__RULES_FILE at another one") from exc
        self._digest = self._digest_now()
        return rules

    def _digest_now(self) -> str:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return self._digest

    def reload(self) -> bool:
        """True when the file changed and its new rules are in force."""
        digest = self._digest_now()
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            self.rules = load_rules(self.path)
        except RulesError as exc:
            log.error("alert rules NOT reloaded, the previous %d rules keep running: %s", len(self.rules.rules), exc)
            return False
        log.info("alert rules reloaded from %s: %d rules", self.path, len(self.rules.rules))
        return True


class AlertEngine:
    def __init__(self, rules: RulesSource, store: AlertStore, writer: RowWriter, publish: PublishAlerts,
                 webhooks: WebhookSender, *, complete_timeout_seconds: float,
                 clock: Callable[[], datetime] = utcnow, audit: PublishAudit | None = None) -> None:
        self.source = rules
        self.audit = audit
        self.store = store
        self.writer = writer
        self.publish = publish
        self.webhooks = webhooks
        self.complete_timeout = complete_timeout_seconds
        self.clock = clock
        self.state = AlertState()
        self.ruleset = RuleSet(self.rules)
        self.waiting: dict[SeriesKey, list[MetricPoint]] = {}
        self.first_seen: dict[SeriesKey, float] = {}
        self.fired = 0
        self._lock = asyncio.Lock()

    @property
    def rules(self) -> list[AlertRule]:
        return self.source.rules.rules

    async def start(self) -> None:
        """Resume every series where it stood: nothing re-fires, nothing pending is forgotten."""
        self.state = AlertState.resumed(await self.store.series())
        log.info("alerting: %d rules, %d series resumed", len(self.rules), len(self.state.series))

    async def offer(self, points: Sequence[MetricPoint]) -> None:
        complete: set[SeriesKey] = set()
        for point in points:
            key = _key(point)
            if point.name == SERIES_COMPLETE:
                complete.add(key)
                continue
            self.waiting.setdefault(key, []).append(point)
            self.first_seen.setdefault(key, time.monotonic())
        deadline = time.monotonic() - self.complete_timeout
        ready = complete | {key for key, seen in self.first_seen.items() if seen <= deadline}
        judged = [p for key in sorted(ready) for p in self.waiting.pop(key, [])]
        for key in ready:
            self.first_seen.pop(key, None)
        if judged:
            await self.judge(judged, quiet=False)

    async def tick(self) -> None:
        """Judge what waited past the timeout, series gone quiet, and pick up an edited rules file."""
        before = [rule.name for rule in self.rules]
        if self.source.reload():
            if self.audit is not None:
                try:
                    await self.audit([AuditEvent(
                        actor=f"worker:{socket.gethostname()}:{os.getpid()}", action="rules.reload",
                        target=str(self.source.path), before=json.dumps(before),
                        after=json.dumps([rule.name for rule in self.rules]))])
                except Exception:
                    log.exception("the rules reload is in force but could not be written to the audit trail")
            self.ruleset = RuleSet(self.rules)
            names = {rule.name for rule in self.rules}
            self.state = AlertState({fp: s for fp, s in self.state.series.items() if s.rule in names},
                                    self.state.seen)
        await self.offer([])
        await self.judge([], quiet=True)

    async def judge(self, points: Sequence[MetricPoint], *, quiet: bool) -> Evaluation:
        async with self._lock:
            now = self.clock()
            result = evaluate(self.ruleset, points, self.state, now, await self.store.silences(now), quiet=quiet)
            events = [await self._with_requests(e) for e in result.events]
            if events:
                await self.publish(events)
                self._notify(events)
                self.fired += len(events)
            if result.changed:
                await self.writer.write(list(result.changed.values()))
            self.state = result.state
            return result

    async def _with_requests(self, event: AlertEvent) -> AlertEvent:
        """Up to five requests behind a breach (the worst of the window), for whoever gets paged."""
        if event.state != "firing" or event.window_start is None:
            return event
        end = event.window_start + timedelta(seconds=event.window_seconds)
        series = {"model": event.model, "adapter": event.adapter, "prompt_version": event.prompt_version}
        ids = await self.store.worst_requests(event.metric, series, event.window_start, end)
        return event.model_copy(update={"request_ids": ids}) if ids else event

    def _notify(self, events: Sequence[AlertEvent]) -> None:
        by_name = {rule.name: rule for rule in self.rules}
        for event in events:
            rule = by_name.get(event.rule)
            if rule is None or event.silenced:
                continue
            for webhook in rule.actions.webhooks:
                self.webhooks.submit(webhook, event)

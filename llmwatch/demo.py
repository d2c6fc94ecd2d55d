"""`llmwatch demo`: publish realistic traffic (some of it malformed) and show it land, reconciled."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from llmwatch.traffic import TrafficMix, inference_event, traffic
from processors.windows import floor_time
from schemas.errors import LlmwatchError
from schemas.events import InferenceEvent
from streams.publisher import Publisher
from streams.settings import Settings
from streams.store.sql import QueryResult, query, running_worker

COUNTED = ("inference_events", "feedback_events", "dead_letters")


def start_stack(settings: Settings, console: Console, timeout: float = 120.0) -> subprocess.Popen[bytes]:
    """`llmwatch up` as a child process; returns once its worker owns the store and answers."""
    log_path = settings.data_dir / "logs" / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"starting the embedded stack ([bold]llmwatch up[/], log: {log_path})")
    with log_path.open("ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "llmwatch", "up"], stdout=log, stderr=subprocess.STDOUT,
                                 env=os.environ.copy())
    deadline = time.monotonic() + timeout
    while (worker := running_worker(settings)) is None or worker["pid"] != child.pid:
        if child.poll() is not None:
            raise LlmwatchError(f"`llmwatch up` exited with code {child.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            child.terminate()
            raise LlmwatchError(f"`llmwatch up` was not ready after {timeout:.0f} s; see {log_path}")
        time.sleep(0.2)
    return child


def row_counts(settings: Settings) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{t}', count() FROM {t}" for t in COUNTED)
    return {table: int(n) for table, n in query(settings, sql).rows}


def publish(settings: Settings, events: int, rate: float, mix: TrafficMix, seed: int, console: Console) -> Counter:
    sent: Counter[str] = Counter()
    rng = random.Random(seed)
    start = time.monotonic()
    with Publisher.from_settings(settings) as publisher, Progress(console=console) as progress:
        task = progress.add_task("publishing", total=events)
        for n, item in enumerate(traffic(rng, mix)):
            if n >= events:
                break
            if isinstance(item, bytes):
                publisher.publish_raw(settings.topics.inference, item)
                sent["malformed"] += 1
            else:
                publisher.publish(item)
                sent["inference" if isinstance(item, InferenceEvent) else "feedback"] += 1
            progress.advance(task)
            ahead = (n + 1) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        publisher.flush()
    return sent


def wait_for(settings: Settings, expected: dict[str, int], timeout: float, console: Console) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    with console.status("waiting for the worker to store everything"):
        while (counts := row_counts(settings)) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
    return counts


def run_demo(settings: Settings, *, events: int, rate: float, mix: TrafficMix, seed: int, keep_running: bool,
             console: Console, incident: bool = True) -> bool:
    child = None
    if settings.embedded_broker and running_worker(settings) is None:
        child = start_stack(settings, console)
    try:
        before = row_counts(settings)
        started = datetime.now(UTC)
        sent = publish(settings, events, rate, mix, seed, console)
        expected = {
            "inference_events": before["inference_events"] + sent["inference"],
            "feedback_events": before["feedback_events"] + sent["feedback"],
            "dead_letters": before["dead_letters"] + sent["malformed"],
        }
        after = wait_for(settings, expected, timeout=60 + events / 500, console=console)
        ok = after == expected
        report(settings, sent, before, after, ok, console)
        show_metrics(settings, started, console)
        if incident:
            ok = latency_incident(settings, seed, console) and ok
        if child is not None and keep_running:
            console.print(f"the stack keeps running (pid {child.pid}); stop it with Ctrl-C or `kill {child.pid}`")
            child = None
        return ok
    finally:
        if child is not None:
            child.terminate()
            child.wait(30)


INCIDENT_RULE = "latency_p99_high"


def latency_incident(settings: Settings, seed: int, console: Console, *, rate: float = 40,
                     slow_seconds: float = 40, calm_seconds: float = 25) -> bool:
    """A latency incident on one model, so that the default latency rule fires and then resolves in view:
    answers six times slower for `slow_seconds` (the rule wants three breaching 10-s windows), then calm."""
    rng = random.Random(seed)
    since = datetime.now(UTC)

    def event(slow: bool) -> InferenceEvent:
        base = inference_event(rng, error_ratio=0)
        latency = base.latency_ms * (6 if slow else 1)
        return base.model_copy(update={"model": "smollm2-135m", "adapter": "support-v4",
                                       "prompt_template_version": "v2", "latency_ms": latency,
                                       "timestamp": datetime.now(UTC)})

    console.print(f"\n[bold]a latency incident[/]: support-v4 answers 6x slower for {slow_seconds:.0f} s, then "
                  f"recovers; the default rule `{INCIDENT_RULE}` (p99 over 5 s for 3 windows) should fire and resolve")
    with Publisher.from_settings(settings) as publisher, Progress(console=console) as progress:
        task = progress.add_task("incident traffic", total=slow_seconds + calm_seconds)
        start = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - start) < slow_seconds + calm_seconds:
            publisher.publish(event(slow=elapsed < slow_seconds))
            sent += 1
            progress.update(task, completed=elapsed)
            time.sleep(max(0.0, sent / rate - (time.monotonic() - start)))
        publisher.flush()
    sql = ("SELECT formatDateTime(timestamp, '%H:%i:%S') AS at, state, severity, round(value) AS p99_ms, "
           "request_ids[1] AS worst_request FROM alerts "
           f"WHERE rule = '{INCIDENT_RULE}' AND model = 'smollm2-135m' AND adapter = 'support-v4' "
           f"AND timestamp >= toDateTime64('{since:%Y-%m-%d %H:%M:%S}', 3, 'UTC') ORDER BY timestamp")
    deadline = time.monotonic() + 60
    with console.status("waiting for the alert to fire and resolve"):
        while {row[1] for row in query(settings, sql).rows} < {"firing", "resolved"} and time.monotonic() < deadline:
            time.sleep(1)
    result = query(settings, sql)
    print_table(result, f"alerts of `{INCIDENT_RULE}` during the incident (alerts table, also on llm.alerts)", console)
    fired = {row[1] for row in result.rows} >= {"firing", "resolved"}
    if not fired:
        console.print("[red]the alert did not both fire and resolve within a minute[/]; see `llmwatch rules list`")
    return fired


def show_metrics(settings: Settings, since: datetime, console: Console) -> None:
    """The window in which the demo started publishing, once it is complete: its points arrive in several
    inserts, and a half-stored window would show zeros; `window.complete` is stored after all of them."""
    seconds = min(settings.metrics.window_seconds)
    window = floor_time(since, seconds)
    complete = f"SELECT count() FROM metric_points WHERE window_seconds = {seconds} AND " \
               f"window_start = toDateTime64('{window:%Y-%m-%d %H:%M:%S}', 3, 'UTC') AND name = 'window.complete'"
    deadline = time.monotonic() + seconds + settings.metrics.lateness_seconds + 60
    with console.status(f"waiting for the {seconds} s window starting {window:%H:%M:%S} to be complete"):
        while not (done := int(query(settings, complete).rows[0][0])) and time.monotonic() < deadline:
            time.sleep(0.5)
    if not done:
        console.print(f"[yellow]the {seconds} s window from {window:%H:%M:%S} is not complete yet "
                      "(no window.complete point); what is stored so far:[/]")
    sql = Path(__file__).with_name("demo_metrics.sql").read_text().format(
        seconds=seconds, start=f"{window:%Y-%m-%d %H:%M:%S}")
    print_table(query(settings, sql), f"metrics of the {seconds} s window from {window:%H:%M:%S} (metric_points)",
                console)
    detected = query(settings, "SELECT name, labels['attribute'], count() FROM metric_points WHERE "
                               f"window_start = toDateTime64('{window:%Y-%m-%d %H:%M:%S}', 3, 'UTC') AND "
                               "(name LIKE 'bias.%.detected' OR name = 'drift.window_detected') AND value = 1 "
                               "GROUP BY 1, 2 ORDER BY 1, 2")
    findings = [f"{name} ({attribute})" if attribute else name for name, attribute, _ in detected.rows]
    console.print("flags raised in that window: " + (", ".join(findings) if findings else "none"))


def print_table(result: QueryResult, title: str, console: Console) -> None:
    table = Table(title=title)
    for column in result.columns:
        table.add_column(column)
    for row in result.rows:
        table.add_row(*map(str, row))
    console.print(table)


def report(settings: Settings, sent: Counter, before: dict[str, int], after: dict[str, int], ok: bool,
           console: Console) -> None:
    table = Table(title="published vs stored (this run)")
    for column in ("kind", "published", "landed in", "rows added"):
        table.add_column(column)
    for kind, target in (("inference", "inference_events"), ("feedback", "feedback_events"),
                         ("malformed", "dead_letters")):
        table.add_row(kind, str(sent[kind]), target, str(after[target] - before[target]))
    console.print(table)
    total_in = sum(sent.values())
    total_out = sum(after[t] - before[t] for t in COUNTED)
    verdict = "[green]reconciled[/]" if ok else "[red]NOT reconciled[/]"
    console.print(f"events in: {total_in} = rows stored + dead letters: {total_out}  {verdict}")
    summary = query(settings, Path(__file__).with_name("demo_summary.sql").read_text())
    print_table(summary, "latency and feedback by model/adapter (all data in the store, by SQL)", console)

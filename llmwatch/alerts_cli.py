"""`llmwatch rules ...` and `llmwatch alerts ...`: check, list and backtest rules; read and silence alerts."""

from __future__ import annotations

import getpass
import re
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatch
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from schemas.errors import LlmwatchError
from schemas.events import AlertEvent, MetricPoint, SilenceEvent
from schemas.rules import RulesError, RulesFile, load_rules
from streams.publisher import Publisher
from streams.settings import Settings, load_settings
from streams.store.sql import query

rules_app = typer.Typer(help="Alert rules: check a file, see each series' state, replay history through rules.",
                        no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts that fired and resolved, and silences (webhooks muted for a while).")
console = Console()

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '2h', '7d', '1w'."""
    match = _DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration: use e.g. 30m, 2h, 24h, 7d")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def _rules_path(settings: Settings, file: Path | None) -> Path:
    from llmwatch.rule_status import rules_path

    return rules_path(settings, file)


def _records(settings: Settings, sql: str) -> list[dict[str, Any]]:
    result = query(settings, sql)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _series(labels: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in labels.items() if v) or "(all)"


@rules_app.command("check")
def check(file: Annotated[Path, typer.Argument(help="The rules YAML to check", exists=False)]) -> None:
    """Every error with the rule name and the line (exit 1); warnings for metrics no processor emits."""
    from processors.families import METRIC_NAMES

    try:
        rules = load_rules(file)
    except RulesError as exc:
        console.print(f"[red]{file}: {len(exc.problems)} error(s)[/]")
        for problem in exc.problems:
            console.print(f"  {problem}")
        raise typer.Exit(1) from exc
    windows = load_settings().metrics.window_seconds
    warnings = 0
    for rule in rules.rules:
        if not any(fnmatch(rule.metric, pattern) for pattern in METRIC_NAMES):
            warnings += 1
            console.print(f"[yellow]warning[/] rule {rule.name}: no llmwatch processor emits `{rule.metric}` "
                          "(fine if another producer publishes it to llm.metrics)")
        if rule.window_seconds not in windows:
            warnings += 1
            console.print(f"[yellow]warning[/] rule {rule.name}: window_seconds {rule.window_seconds} is not "
                          f"computed (LLMWATCH_METRICS__WINDOW_SECONDS is {list(windows)})")
    console.print(f"{file}: {len(rules.rules)} rules OK" + (f", {warnings} warning(s)" if warnings else ""))


@rules_app.command("list")
def list_rules(file: Annotated[Path | None, typer.Option(help="Rules file; default: the one in force")] = None
               ) -> None:
    """Each rule and each of its series seen in the last day: state (ok, pending, firing, no_data, silenced)
    and the latest value."""
    from llmwatch.rule_status import rule_series

    settings = load_settings()
    rules = load_rules(_rules_path(settings, file))
    table = Table("rule", "metric", "condition", "series", "state", "value", "last window (UTC)")
    for row in rule_series(partial(query, settings), rules.rules, datetime.now(UTC)):
        if row.value is None:
            table.add_row(row.rule, row.metric, row.condition, "-", row.state, "", "")
            continue
        color = {"firing": "red", "pending": "yellow", "no_data": "magenta"}.get(row.state, "green")
        state = row.state + (" (silenced)" if row.silenced else "")
        table.add_row(row.rule, row.metric, row.condition, _series(row.series), f"[{color}]{state}[/]",
                      f"{row.value:.4g}", f"{row.window_start:%Y-%m-%d %H:%M:%S}")
    console.print(table)


def backtest_rules(rules: RulesFile, points: list[MetricPoint], lateness: float,
                   until: datetime) -> list[AlertEvent]:
    """Replay stored points through the rules, window by window, as the stream would have judged them."""
    from processors.alerting.evaluation import AlertState, evaluate

    state = AlertState()
    events: list[AlertEvent] = []
    by_window: dict[tuple[datetime, int], list[MetricPoint]] = defaultdict(list)
    for point in points:
        by_window[(point.window_start, point.window_seconds)].append(point)
    for (start, seconds), window_points in sorted(by_window.items(), key=lambda item: item[0][0] + timedelta(
            seconds=item[0][1])):
        judged_at = start + timedelta(seconds=seconds + lateness)
        result = evaluate(rules.rules, window_points, state, judged_at)
        state = result.state
        events += result.events
    events += evaluate(rules.rules, [], state, until).events
    return events


@rules_app.command("backtest")
def backtest(
    file: Annotated[Path, typer.Argument(help="The rules YAML to try")],
    since: Annotated[str, typer.Option(help="How far back: 30m, 24h, 7d")] = "24h",
) -> None:
    """Replay the stored metric points through FILE and print when each rule would have fired and resolved,
    so thresholds can be tuned on history before they page anyone."""
    settings = load_settings()
    try:
        rules = load_rules(file)
    except RulesError as exc:
        raise LlmwatchError(str(exc)) from exc
    until = datetime.now(UTC)
    start = until - parse_duration(since)
    names = sorted({rule.metric for rule in rules.rules} | {"requests"})
    quoted = ", ".join("'" + name.replace("'", "") + "'" for name in names)
    records = _records(settings, "SELECT name, value, window_start, window_seconds, model, adapter, prompt_version, "
                                 f"labels FROM metric_points WHERE window_start >= '{start:%Y-%m-%d %H:%M:%S}' "
                                 f"AND name IN ({quoted}) ORDER BY window_start")
    points = [MetricPoint.model_validate(r) for r in records]
    events = backtest_rules(rules, points, settings.metrics.lateness_seconds, until)
    console.print(f"{len(points)} stored points of {len(names)} metrics since {start:%Y-%m-%d %H:%M} UTC, "
                  f"{len(rules.rules)} rules")
    table = Table("at (UTC)", "rule", "series", "state", "severity", "value", title="what would have happened")
    for event in sorted(events, key=lambda e: e.timestamp):
        color = {"firing": "red", "resolved": "green"}.get(event.state, "magenta")
        table.add_row(f"{event.timestamp:%Y-%m-%d %H:%M:%S}", event.rule,
                      _series({"model": event.model, "adapter": event.adapter, "prompt_version": event.prompt_version,
                               **{k: v for k, v in event.labels.items() if k not in {"alertname", "severity"}}}),
                      f"[{color}]{event.state}[/]", event.severity, f"{event.value:.4g}")
    console.print(table)
    summary = Table("rule", "fired", "resolved", "firing now", "time firing", title="per rule")
    for rule in rules.rules:
        mine = [e for e in events if e.rule == rule.name]
        fired = [e for e in mine if e.state == "firing"]
        resolved = [e for e in mine if e.state == "resolved" and e.starts_at and e.ends_at]
        open_now = len(fired) - len(resolved)
        firing_time = sum(((e.ends_at - e.starts_at) for e in resolved if e.ends_at and e.starts_at), timedelta())
        summary.add_row(rule.name, str(len(fired)), str(len(resolved)), str(max(open_now, 0)), str(firing_time))
    console.print(summary)


@alerts_app.callback(invoke_without_command=True)
def recent(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="How far back: 30m, 24h, 7d")] = "24h",
    rule: Annotated[str | None, typer.Option(help="Only this rule (glob)")] = None,
    state: Annotated[str | None, typer.Option(help="firing, resolved or no_data")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """Recent alerts, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    settings = load_settings()
    start = datetime.now(UTC) - parse_duration(since)
    records = _records(settings, "SELECT timestamp, rule, state, severity, model, adapter, value, threshold, "
                                 "message, silenced, request_ids FROM alerts "
                                 f"WHERE timestamp >= '{start:%Y-%m-%d %H:%M:%S}' ORDER BY timestamp DESC")
    table = Table("at (UTC)", "rule", "state", "severity", "model", "adapter", "value", "message", "requests")
    shown = 0
    for r in records:
        if (rule and not fnmatch(r["rule"], rule)) or (state and r["state"] != state):
            continue
        shown += 1
        if shown > limit:
            break
        table.add_row(str(r["timestamp"])[:19], r["rule"], r["state"] + (" (silenced)" if r["silenced"] else ""),
                      r["severity"], r["model"], r["adapter"], f"{r['value']:.4g}", r["message"],
                      ", ".join(r["request_ids"][:2]))
    console.print(table if shown else f"no alerts since {start:%Y-%m-%d %H:%M} UTC")


def _matchers(match: list[str] | None) -> dict[str, str]:
    found = {}
    for item in match or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--match {item!r}: use label=value (value may be a glob), e.g. model=smollm2*")
        found[key.strip()] = value.strip()
    return found


def silence_id(rule: str, matchers: dict[str, str]) -> str:
    """The same rule and matchers name the same silence, so `unsilence` finds what `silence` made."""
    return uuid.uuid5(uuid.NAMESPACE_URL, rule + "|" + "|".join(f"{k}={v}" for k, v in sorted(matchers.items()))).hex


def _publish_silence(settings: Settings, rule: str, matchers: dict[str, str], ends_at: datetime,
                     comment: str) -> SilenceEvent:
    sid = silence_id(rule, matchers)
    now = datetime.now(UTC)
    event = SilenceEvent(event_id=uuid.uuid5(uuid.NAMESPACE_OID, sid), silence_id=sid, rule=rule, matchers=matchers,
                         starts_at=now, ends_at=ends_at, created_by=getpass.getuser(), comment=comment, timestamp=now)
    with Publisher.from_settings(settings) as publisher:
        publisher.publish(event).get(timeout=30)
    from llmwatch.audit_cli import record

    record(settings, "alert.silence" if ends_at > now else "alert.unsilence", rule,
           after={"matchers": matchers, "ends_at": ends_at.isoformat(), "comment": comment})
    return event


@alerts_app.command("silence")
def silence(
    rule: Annotated[str, typer.Argument(help="Rule name (glob)")],
    for_: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d")] = "2h",
    match: Annotated[list[str] | None, typer.Option(help="label=value (glob), repeatable: model=smollm2*")] = None,
    comment: Annotated[str, typer.Option(help="Why, for whoever looks later")] = "",
) -> None:
    """Mute a rule's webhooks (its series still change state and are stored); expires on its own."""
    settings = load_settings()
    event = _publish_silence(settings, rule, _matchers(match), datetime.now(UTC) + parse_duration(for_), comment)
    console.print(f"silenced {rule} {_series(event.matchers)} until {event.ends_at:%Y-%m-%d %H:%M:%S} UTC")


@alerts_app.command("unsilence")
def unsilence(
    rule: Annotated[str, typer.Argument(help="Rule name (glob), as given to `silence`")],
    match: Annotated[list[str] | None, typer.Option(help="The same --match as given to `silence`")] = None,
) -> None:
    """Lift a silence now."""
    settings = load_settings()
    _publish_silence(settings, rule, _matchers(match), datetime.now(UTC), "lifted")
    console.print(f"silence on {rule} {_series(_matchers(match))} lifted")


@alerts_app.command("silences")
def silences() -> None:
    """Silences in force."""
    settings = load_settings()
    now = datetime.now(UTC)
    records = _records(settings, "SELECT rule, matchers, ends_at, created_by, comment FROM silences "
                                 f"WHERE ends_at > '{now:%Y-%m-%d %H:%M:%S}' ORDER BY ends_at")
    table = Table("rule", "matchers", "until (UTC)", "by", "comment")
    for r in records:
        table.add_row(r["rule"], _series(r["matchers"]), str(r["ends_at"])[:19], r["created_by"], r["comment"])
    console.print(table if records else "no silences in force")

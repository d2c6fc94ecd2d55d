"""The audit trail from the CLI: what a person changed with llmwatch (published), and `llmwatch audit` (listed)."""

from __future__ import annotations

import getpass
import json
import socket
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from schemas.events import AuditEvent
from streams.publisher import Publisher
from streams.settings import Settings, load_settings
from streams.store.sql import query

console = Console()
err_console = Console(stderr=True)


def record(settings: Settings, action: str, target: str = "", before: Any = None, after: Any = None) -> None:
    """Publish one change made from this CLI; the change is already made, so a failure only warns."""
    event = AuditEvent(actor=f"{getpass.getuser()}@{socket.gethostname()}", action=action, target=target,
                       before="" if before is None else json.dumps(before, sort_keys=True, default=str),
                       after="" if after is None else json.dumps(after, sort_keys=True, default=str))
    try:
        with Publisher.from_settings(settings) as publisher:
            publisher.publish(event).get(timeout=30)
    except Exception as exc:
        err_console.print(f"[yellow]done, but not recorded in the audit trail ({exc}); is the broker running?")


def audit(
    since: Annotated[str, typer.Option(help="How far back, e.g. 24h, 7d")] = "7d",
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. route.change")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
) -> None:
    """Who changed what: route changes, silences, rules reloads, drift reference pins, erasures."""
    from llmwatch.alerts_cli import parse_duration

    start = datetime.now(UTC) - parse_duration(since)
    only = "" if action is None else "AND action = '" + action.replace("'", "").replace("\\", "") + "'"
    result = query(load_settings(), "SELECT timestamp, actor, action, target, before, after FROM audit FINAL "
                                    f"WHERE timestamp >= '{start:%Y-%m-%d %H:%M:%S}' {only} "
                                    f"ORDER BY timestamp DESC LIMIT {limit}")
    table = Table("at (UTC)", "who", "action", "target", "before", "after")
    for at, actor, act, target, before, after in result.rows:
        table.add_row(str(at)[:19], actor, act, target, before, after)
    console.print(table if result.rows else f"no changes recorded in the last {since}")

"""`llmwatch drift ...`: what each window is compared with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from llmwatch.audit_cli import record
from schemas.errors import LlmwatchError
from streams.settings import load_settings
from streams.store.admin import run_command
from streams.store.sql import query

app = typer.Typer(help="Drift reference: the first N sampled events, unless you pin a period.",
                  no_args_is_help=True)
console = Console()


@app.command("set-reference")
def set_reference(
    since: Annotated[datetime, typer.Option(help="Start of the reference period (UTC), e.g. 2026-11-23T09:00")],
    until: Annotated[datetime, typer.Option(help="End of the reference period (UTC)")],
    model: Annotated[str | None, typer.Option(help="Only events of this model")] = None,
) -> None:
    """Pin the sampled events of a period as the reference every window is compared with."""
    settings = load_settings()
    if until <= since:
        raise LlmwatchError("--until must be after --since")
    found = run_command(settings, "drift.pin_reference", since=since.replace(tzinfo=since.tzinfo or UTC),
                        until=until.replace(tzinfo=until.tzinfo or UTC), model=model or "",
                        min_samples=settings.metrics.drift_min_window_samples)
    record(settings, "drift.pin_reference", model or "", after={"since": since, "until": until, "events": found})
    console.print(f"drift reference pinned: {found} sampled events from {since} to {until}")


@app.command("clear-reference")
def clear_reference() -> None:
    """Go back to the default reference: the first LLMWATCH_METRICS__DRIFT_REFERENCE_SIZE sampled events."""
    settings = load_settings()
    run_command(settings, "drift.clear_reference")
    record(settings, "drift.clear_reference")
    console.print("drift reference cleared: the first sampled events are the reference again")


@app.command("show")
def show() -> None:
    """Which reference is in use and how large it is."""
    settings = load_settings()
    pinned = int(query(settings, "SELECT count() FROM drift_reference").rows[0][0])
    if pinned:
        console.print(f"pinned reference: {pinned} events")
    else:
        sampled = int(query(settings, "SELECT count() FROM embeddings WHERE field = 'prompt'").rows[0][0])
        console.print(f"default reference: the first {min(sampled, settings.metrics.drift_reference_size)} of "
                      f"{settings.metrics.drift_reference_size} sampled events")

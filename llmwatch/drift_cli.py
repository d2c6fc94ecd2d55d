"""`llmwatch drift ...`: what each window is compared with."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console

from schemas.errors import LlmwatchError
from streams.settings import load_settings
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
    condition = (f"timestamp >= toDateTime64('{since:%Y-%m-%d %H:%M:%S}', 3, 'UTC') "
                 f"AND timestamp < toDateTime64('{until:%Y-%m-%d %H:%M:%S}', 3, 'UTC') AND field = 'prompt'")
    if model:
        condition += f" AND model = '{model.replace(chr(39), '')}'"
    found = int(query(settings, f"SELECT count() FROM embeddings WHERE {condition}").rows[0][0])
    if found < settings.metrics.drift_min_window_samples:
        raise LlmwatchError(
            f"only {found} sampled events in that period (need {settings.metrics.drift_min_window_samples}); "
            "widen it, or raise LLMWATCH_METRICS__EMBED_PER_SECOND so that more events are sampled")
    query(settings, "TRUNCATE TABLE drift_reference")
    query(settings, "INSERT INTO drift_reference (event_id) "
                    f"SELECT DISTINCT event_id FROM embeddings WHERE {condition}")
    console.print(f"drift reference pinned: {found} sampled events from {since} to {until}")


@app.command("clear-reference")
def clear_reference() -> None:
    """Go back to the default reference: the first LLMWATCH_METRICS__DRIFT_REFERENCE_SIZE sampled events."""
    query(load_settings(), "TRUNCATE TABLE drift_reference")
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

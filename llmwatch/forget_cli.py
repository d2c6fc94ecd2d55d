"""`llmwatch forget`: erase a person's rows from every table, and flag the adapters that may have learned them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import uuid4

import typer
from rich.console import Console
from rich.table import Table

from llmwatch.audit_cli import record
from schemas.errors import LlmwatchError
from streams.settings import Settings, load_settings
from streams.store.admin import run_command
from trainers.lineage import mark_erasures

console = Console()


def stored_user_ids(settings: Settings, user: str) -> list[str]:
    """The id as given and, when the gateway hashes user ids, its keyed hash (what the tables hold)."""
    ids = [user]
    if settings.serving.user_ids == "hash":
        from serving.gateway.tokens import Signer, load_secret

        secret = load_secret(settings.serving.feedback_secret.get_secret_value(), settings.data_dir)
        ids.append(Signer(secret).user_hash(user))
    return ids


def forget(
    user: Annotated[list[str], typer.Option("--user", help="A user id (as the app sent it); repeatable")] = [],  # noqa: B006
    session: Annotated[list[str], typer.Option("--session", help="A session id; repeatable")] = [],  # noqa: B006
) -> None:
    """Delete every row of a user or session: inference, feedback, embeddings, drift reference, metric points
    and alerts labelled with the user, and dead letters whose raw bytes carry the id. Prints the count per
    table, and marks (erasures.json) each adapter whose training period held those rows."""
    if not user and not session:
        raise LlmwatchError("name whom to forget: --user U and/or --session S")
    settings = load_settings()
    users = [i for u in user for i in stored_user_ids(settings, u)]
    result = run_command(settings, "forget", users=users, sessions=list(session))
    table = Table("table", "rows deleted")
    for name, count in result["counts"].items():
        table.add_row(name, str(count))
    console.print(table)
    spans = {model: (datetime.fromisoformat(first), datetime.fromisoformat(last))
             for model, (first, last) in result["spans"].items()}
    erasure_id = str(uuid4())
    marked = mark_erasures(settings.adapters_dir, spans, erasure_id, datetime.now(UTC))
    for name in marked:
        console.print(f"adapter {name} was trained on a period that held these rows: consider retraining it")
    record(settings, "erasure", erasure_id, after={"counts": result["counts"], "adapters_marked": marked})
    console.print(f"erasure {erasure_id}: {sum(result['counts'].values())} rows deleted")

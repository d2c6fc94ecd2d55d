"""The writes llmwatch itself makes on an analyst's behalf: a short, fixed list of commands.

`llmwatch sql` is read-only; these are the only statements the CLI may have the store run that change
it. With an embedded store owned by a running worker they go to its `/llmwatch/admin` endpoint, which
runs nothing but a command named here; otherwise straight to the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from schemas.errors import StoreError
from streams.settings import Retention, Settings
from streams.store.client import READ_SETTINGS, connect, migrate
from streams.store.sql import post_to_worker, running_worker

_PERIOD = ("timestamp >= {since:DateTime64(3, 'UTC')} AND timestamp < {until:DateTime64(3, 'UTC')} "
           "AND field = 'prompt' AND ({model:String} = '' OR model = {model:String})")


def pin_drift_reference(client: Client, since: datetime, until: datetime, model: str, min_samples: int) -> int:
    """Pin the sampled events of [since, until) as the drift reference; returns how many."""
    parameters = {"since": since, "until": until, "model": model}
    found = int(client.query(f"SELECT count(DISTINCT event_id) FROM embeddings WHERE {_PERIOD}",
                             parameters=parameters, settings=READ_SETTINGS).result_rows[0][0])
    if found < min_samples:
        raise StoreError(
            f"only {found} sampled events in that period (need {min_samples}); widen it, or raise "
            "LLMWATCH_METRICS__EMBED_PER_SECOND so that more events are sampled")
    client.command("TRUNCATE TABLE drift_reference")
    client.command(f"INSERT INTO drift_reference (event_id) SELECT DISTINCT event_id FROM embeddings WHERE {_PERIOD}",
                   parameters=parameters, settings=READ_SETTINGS)
    return found


def clear_drift_reference(client: Client) -> None:
    client.command("TRUNCATE TABLE drift_reference")


_INFERENCE = "(user_id IN {users:Array(String)} OR session_id IN {sessions:Array(String)})"
_ID_PATTERN = '"{key}"\\s*:\\s*"({ids})"'
_SYNC = {"lightweight_deletes_sync": 2, "mutations_sync": 2}


def _erasures() -> dict[str, str]:
    """Table -> the condition that finds a person's rows in it (inference rows still present: run first)."""
    requests = f"SELECT request_id FROM inference_events WHERE {_INFERENCE}"
    events = f"SELECT event_id FROM inference_events WHERE {_INFERENCE}"
    return {
        "feedback_events": f"user_id IN {{users:Array(String)}} OR request_id IN ({requests})",
        "embeddings": f"event_id IN ({events})",
        "drift_reference": f"event_id IN ({events})",
        "metric_points": "labels['user'] IN {users:Array(String)}",
        "alerts": "labels['user'] IN {users:Array(String)}",
        "dead_letters": "match(raw, {pattern:String})",
        "inference_events": _INFERENCE,
    }


def forget(client: Client, users: list[str], sessions: list[str]) -> dict[str, Any]:
    """Delete every row of these users or sessions, table by table; the counts, and each model's time span.

    Inference rows go last: the other tables find the person's rows through them, so a run cut short
    can be repeated and still finds everything. Deletes are lightweight (rows vanish from reads at once,
    from disk at the next merge) and synchronous.
    """
    users, sessions = [u for u in users if u], [s for s in sessions if s]
    if not users and not sessions:
        raise StoreError("forget needs a user id or a session id")
    pattern = "|".join(_ID_PATTERN.format(key=key, ids="|".join(re.escape(i) for i in ids))
                       for key, ids in (("user_id", users), ("session_id", sessions)) if ids)
    parameters = {"users": users, "sessions": sessions, "pattern": pattern}
    spans = client.query(f"SELECT model, min(timestamp), max(timestamp) FROM inference_events WHERE {_INFERENCE} "
                         "GROUP BY model", parameters=parameters, settings=READ_SETTINGS).result_rows
    counts = {}
    for table, condition in _erasures().items():
        found = int(client.query(f"SELECT count() FROM {table} FINAL WHERE {condition}", parameters=parameters,
                                 settings=READ_SETTINGS).result_rows[0][0])
        if found:
            client.command(f"DELETE FROM {table} WHERE {condition}", parameters=parameters, settings=_SYNC)
        counts[table] = found
    return {"counts": counts,
            "spans": {model: [first.isoformat(), last.isoformat()] for model, first, last in spans}}


ERASED_USER = "(erased)"
USER_LABELLED_TABLES = frozenset({"metric_points", "alerts"})


def without_forgotten_users(client: Client, names: Sequence[str], rows: Sequence[Sequence[Any]],
                            ) -> Sequence[Sequence[Any]]:
    """The rows (metric points or alerts, in `names` column order) with `labels['user']` replaced by
    ERASED_USER where that user has no inference rows left in the rows' windows.

    A window pass that read a user's rows just before `forget` deleted them publishes the user's points
    after; they reach the store after the erasure. Run inside the insert's own store call (one thread,
    so it cannot interleave with a `forget`), this keeps a forgotten user out of every later row. The point
    is kept, not dropped, so that its window still counts all its points as stored. The lookup is bounded
    by the rows' models and windows (the table's sort key), so it costs the same on a table of any age.
    """
    labels, model, start, seconds = (names.index(n) for n in ("labels", "model", "window_start", "window_seconds"))
    labelled = [row for row in rows if "user" in row[labels]]
    if not labelled:
        return rows
    users = {row[labels]["user"] for row in labelled}
    window = ""
    parameters: dict[str, Any] = {"users": sorted(users), "models": sorted({row[model] for row in labelled})}
    if all(row[start] is not None for row in labelled):
        window = "AND timestamp >= {since:DateTime64(3, 'UTC')} AND timestamp < {until:DateTime64(3, 'UTC')}"
        parameters["since"] = min(row[start] for row in labelled)
        parameters["until"] = max(row[start] + timedelta(seconds=row[seconds]) for row in labelled)
    present = {user for (user,) in client.query(
        "SELECT DISTINCT user_id FROM inference_events WHERE model IN {models:Array(String)} "
        f"AND user_id IN {{users:Array(String)}} {window}",
        parameters=parameters, settings=READ_SETTINGS).result_rows}
    forgotten = users - present
    return [[*row[:labels], row[labels] | {"user": ERASED_USER}, *row[labels + 1:]]
            if row[labels].get("user") in forgotten else row for row in rows]


def apply_migrations(client: Client, retention: dict[str, int]) -> int:
    return migrate(client, Retention(**retention))


COMMANDS: dict[str, Callable[..., Any]] = {
    "drift.pin_reference": pin_drift_reference,
    "drift.clear_reference": clear_drift_reference,
    "migrate": apply_migrations,
    "forget": forget,
}


def call_command(client: Client, name: str, args: dict[str, Any]) -> Any:
    """Run one of COMMANDS (and nothing else) with JSON arguments; store errors become StoreError."""
    if name not in COMMANDS:
        raise StoreError(f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}")
    if name == "drift.pin_reference":
        args = args | {key: datetime.fromisoformat(args[key]) for key in ("since", "until") if key in args}
    try:
        return COMMANDS[name](client, **args)
    except TypeError as exc:
        raise StoreError(f"wrong arguments for {name}: {exc}") from exc
    except ClickHouseError as exc:
        raise StoreError(f"{name} failed: {str(exc).strip()}") from exc


def run_command(settings: Settings, name: str, timeout: float = 300.0, **args: Any) -> Any:
    """Through the worker that owns the embedded store, or straight to the store."""
    args = {key: value.isoformat() if isinstance(value, datetime) else value for key, value in args.items()}
    worker = running_worker(settings) if settings.embedded_store else None
    if worker is not None:
        return post_to_worker(worker, "/llmwatch/admin", {"command": name, "args": args}, timeout)["result"]
    client = connect(settings.store_dsn)
    try:
        return call_command(client, name, args)
    finally:
        client.close()

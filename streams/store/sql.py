"""Run an analyst's SQL against whichever store is configured, read-only.

A chdb store can be opened by one process only; while a worker owns it, queries go to that worker
over loopback HTTP (address and token in <data_dir>/worker.json), otherwise straight to the store.
Either way a query runs with ClickHouse's `readonly = 2` (reads, and settings for the query) in a session
of its own, so that neither a DROP nor a `SET` or `USE` reaches the tables or the worker's own session.
What llmwatch itself writes goes through `streams.store.admin`, never through here.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from schemas.errors import StoreError, StoreUnavailableError
from streams.settings import Settings
from streams.store.client import READ_SETTINGS, connect

ANALYST_SETTINGS = READ_SETTINGS | {"readonly": 2}
"""readonly = 2: SELECT, SHOW, DESCRIBE, EXPLAIN, and query settings; no DDL, INSERT, ALTER or OPTIMIZE."""

READ_ONLY_HINT = (
    "`llmwatch sql` is read-only: it runs SELECT, SHOW, DESCRIBE and EXPLAIN (settings go in a SETTINGS clause) "
    "and refuses statements that change tables or data. llmwatch's own writes have their own commands: "
    "`llmwatch drift set-reference` / `clear-reference`, `llmwatch migrate`. Anything else: a ClickHouse client "
    "with a user allowed to write"
)


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), default=str, ensure_ascii=False).encode()


Parameters = Mapping[str, Any]
"""Values for the query's `{name:Type}` placeholders, bound by ClickHouse itself (never spliced into the SQL):
strings, numbers, booleans, lists of them, or datetimes."""

_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def wire_parameters(parameters: Parameters | None) -> dict[str, Any]:
    """Parameters as JSON can carry them and ClickHouse parses them: a datetime becomes UTC text."""

    def value(item: Any) -> Any:
        if isinstance(item, datetime):
            moment = item.astimezone(UTC) if item.tzinfo else item
            return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        if isinstance(item, list | tuple):
            return [value(v) for v in item]
        if item is None or isinstance(item, str | int | float | bool):
            return item
        raise StoreError(f"query parameter of type {type(item).__name__} is not supported: "
                         "use a string, a number, a boolean, a datetime or a list of them")

    wired = {}
    for name, item in (parameters or {}).items():
        if not isinstance(name, str) or not _PARAMETER_NAME.match(name):
            raise StoreError(f"query parameter name {name!r} is not a ClickHouse identifier")
        wired[name] = value(item)
    return wired


def run_query(client: Client, sql: str, parameters: Parameters | None = None) -> QueryResult:
    """One analyst query, read-only; pass a client of its own (see `StoreRunner.call_in_own_session`)."""
    try:
        result = client.query(sql, parameters=wire_parameters(parameters), settings=ANALYST_SETTINGS)
    except ClickHouseError as exc:
        message = str(exc).strip()
        if re.search(r"Code: 164\b|\(READONLY\)", message):
            raise StoreError(f"refused: {READ_ONLY_HINT}.\n{message}") from exc
        raise StoreError(message) from exc
    return QueryResult(
        columns=list(result.column_names),
        types=[t.name for t in result.column_types],
        rows=[list(row) for row in result.result_rows],
    )


def running_worker(settings: Settings) -> dict[str, Any] | None:
    """The worker that owns the embedded store, if one is alive."""
    try:
        info = json.loads(settings.worker_file.read_text())
        os.kill(info["pid"], 0)
    except (OSError, ValueError, KeyError):
        return None
    return info


def query(settings: Settings, sql: str, parameters: Parameters | None = None, *, timeout: float = 60.0,
          open_store: bool = True) -> QueryResult:
    """Read-only SQL with `{name:Type}` placeholders bound to `parameters` by ClickHouse.

    With the embedded store, through the worker that owns it; with none running, the store is opened here
    unless `open_store` is false (a long-lived process must not: it would keep the store from the worker).
    """
    worker = running_worker(settings) if settings.embedded_store else None
    if worker is None:
        if settings.embedded_store and not open_store:
            raise StoreUnavailableError(
                f"no worker owns the embedded store in {settings.data_dir} yet: start `llmwatch up` (or "
                "`llmwatch worker`) with the same LLMWATCH_DATA_DIR")
        client = connect(settings.store_dsn)
        try:
            return run_query(client, sql, parameters)
        finally:
            client.close()
    body = {"query": sql, "parameters": wire_parameters(parameters)}
    return QueryResult(**post_to_worker(worker, "/llmwatch/sql", body, timeout))


def post_to_worker(worker: dict[str, Any], path: str, body: dict[str, Any], timeout: float) -> Any:
    """POST to the worker that owns the store; its refusals become StoreError with its message."""
    request = urllib.request.Request(
        f"{worker['url']}{path}",
        data=json.dumps(body, default=str).encode(),
        headers={"Authorization": f"Bearer {worker['token']}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise StoreError(detail) from exc
    except urllib.error.URLError as exc:
        raise StoreError(f"the worker (pid {worker['pid']}) owns the store but does not answer at "
                         f"{worker['url']}: {exc.reason}") from exc

"""Run an analyst's SQL against whichever store is configured.

A chdb store can be opened by one process only; while a worker owns it, queries go to that worker
over loopback HTTP (address and token in <data_dir>/worker.json), otherwise straight to the store.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from schemas.errors import StoreError, StoreUnavailableError
from streams.settings import Settings
from streams.store.client import READ_SETTINGS, connect


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), default=str, ensure_ascii=False).encode()


def run_query(client: Client, sql: str) -> QueryResult:
    try:
        result = client.query(sql, settings=READ_SETTINGS)
    except ClickHouseError as exc:
        raise StoreError(str(exc).strip()) from exc
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


def query(settings: Settings, sql: str, *, timeout: float = 60.0, direct: bool = True) -> QueryResult:
    """`direct=False`: never open an embedded store here (a long-lived process such as the trainer would hold it
    and keep the worker from starting); without a running worker that is a StoreUnavailableError."""
    worker = running_worker(settings) if settings.embedded_store else None
    if worker is None and settings.embedded_store and not direct:
        raise StoreUnavailableError(f"no worker owns the embedded store in {settings.data_dir}: start `llmwatch up` "
                                    "(or `llmwatch worker`) first")
    if worker is None:
        client = connect(settings.store_dsn)
        try:
            return run_query(client, sql)
        finally:
            client.close()
    request = urllib.request.Request(
        f"{worker['url']}/llmwatch/sql",
        data=json.dumps({"query": sql}).encode(),
        headers={"Authorization": f"Bearer {worker['token']}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise StoreError(detail) from exc
    except urllib.error.URLError as exc:
        raise StoreError(f"the worker (pid {worker['pid']}) owns the store but does not answer at "
                         f"{worker['url']}: {exc.reason}") from exc
    return QueryResult(**body)

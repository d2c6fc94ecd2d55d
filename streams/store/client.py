"""ClickHouse through clickhouse-connect, the same calls for chdb (in-process) and a server (HTTP).

Migrations are numbered SQL files in schemas/migrations, applied once each and recorded in
`schema_migrations`; table TTLs follow the retention settings at every start.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from schemas.errors import StoreError, StoreUnavailableError
from schemas.events import STORED_MODELS
from streams.settings import Retention

log = logging.getLogger(__name__)

READ_SETTINGS = {"final": 1}
"""Every read collapses replayed duplicates (ReplacingMergeTree) before the user sees a row."""

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree ORDER BY version
"""


def connect(dsn: str) -> Client:
    """Open the store named by a DSN: chdb:///abs/dir in-process, or http(s)://... for a server."""
    try:
        if dsn.startswith("chdb://"):
            path = urlparse(dsn).path
            return clickhouse_connect.get_client(interface="chdb", path=path)
        return clickhouse_connect.get_client(dsn=dsn)
    except OperationalError as exc:
        raise StoreUnavailableError(f"cannot reach ClickHouse at {_safe(dsn)}: {exc}. Is it running?") from exc
    except ClickHouseError as exc:
        if "Error initializing EmbeddedServer" in str(exc):
            raise StoreError(
                f"the embedded store {_safe(dsn)} is open in another process; "
                "stop that process or reach the store through `llmwatch sql`"
            ) from exc
        raise StoreError(f"cannot open ClickHouse at {_safe(dsn)}: {exc}") from exc


def _safe(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", dsn)


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration shipped with llmwatch, in order."""
    found = []
    for entry in resources.files("schemas").joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d+)_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found)


def statements(sql: str) -> list[str]:
    """Split a migration file on the semicolons that end a line; comment lines are dropped."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [stmt.strip() for stmt in re.split(r";\s*$", "\n".join(lines), flags=re.M) if stmt.strip()]


def migrate(client: Client, retention: Retention) -> int:
    """Bring the store to the newest schema and the configured retention; returns the schema version."""
    try:
        client.command(_MIGRATIONS_TABLE)
        applied = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
        for version, name, sql in migration_files():
            if version in applied:
                continue
            log.info("applying migration %04d_%s", version, name)
            for statement in statements(sql):
                client.command(statement)
            client.insert("schema_migrations", [[version, name]], column_names=["version", "name"])
        apply_retention(client, retention)
        return schema_version(client)
    except ClickHouseError as exc:
        raise StoreError(f"migrating the store failed: {exc}") from exc


def schema_version(client: Client) -> int:
    return int(client.command("SELECT max(version) FROM schema_migrations") or 0)  # type: ignore[arg-type]


def ttl_clause(age_column: str, days: int) -> str:
    return f"toDateTime({age_column}) + toIntervalDay({days})"


DERIVED_TABLES = (("overview_windows", "window_start", "metrics"),)
"""(table, age column, retention kind) of tables that views fill from stored ones: they age with their source."""


def apply_retention(client: Client, retention: Retention) -> None:
    """Set each table's TTL from settings, touching only tables whose TTL differs."""
    tables = [(m.table, m.age_column, m.retention) for m in STORED_MODELS] + list(DERIVED_TABLES)
    engines: dict[str, str] = {name: engine for name, engine in client.query(  # one query, not one per table
        "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()").result_rows}
    for table, age_column, kind in tables:
        days = getattr(retention, f"{kind}_days")
        engine = engines.get(table, "")
        wanted = ttl_clause(age_column, days) if days else None
        has_ttl = " TTL " in f" {engine} "
        if wanted is None and has_ttl:
            client.command(f"ALTER TABLE {table} REMOVE TTL")
        elif wanted is not None and wanted not in str(engine):
            client.command(
                f"ALTER TABLE {table} MODIFY TTL {wanted}",
                settings={"materialize_ttl_after_modify": 0},
            )

"""The cost of keeping a forgotten user out of late metric points: `without_forgotten_users`
(streams/store/admin.py), which every insert of points or alerts that carry a user label runs first, against
a baseline in the same run: the same lookup without the models and windows that bound it (a scan of
user_id over the whole table).

    python benchmarks/forget_check.py                         # 200k and 1M inference rows
    python benchmarks/forget_check.py --rows 100000 --repeat 5

The store is a fresh chdb folder brought to the newest schema by the real migrations, filled with
INSERT ... SELECT FROM numbers() (5,000 users over the last hour). Each check is a batch of 20 points for 5
users in one 10-s window; seconds are wall time, the median of --repeat checks.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from streams.settings import Retention
from streams.store.admin import without_forgotten_users
from streams.store.client import READ_SETTINGS, connect, migrate

NAMES = ["labels", "model", "window_start", "window_seconds"]


def fill(client: Client, rows: int) -> None:
    client.command("TRUNCATE TABLE inference_events")
    client.command(f"""
        INSERT INTO inference_events (event_id, schema_version, timestamp, request_id, model, prompt, latency_ms,
            status, user_id)
        SELECT generateUUIDv4(number), 1, now64(3) - toIntervalMillisecond(number % 3600000),
               concat('r', toString(number)), 'm', 'hi', 10, 'ok', concat('user-', toString(number % 5000))
        FROM numbers({rows})""")


def unbounded(client: Client, names: list[str], rows: list[list[Any]]) -> None:
    users = sorted({row[0]["user"] for row in rows})
    client.query("SELECT DISTINCT user_id FROM inference_events WHERE user_id IN {users:Array(String)}",
                 parameters={"users": users}, settings=READ_SETTINGS)


def median_ms(check: Callable[[Client, list[str], list[list[Any]]], Any], client: Client, batch: list[list[Any]],
              repeat: int) -> float:
    took = []
    for _ in range(repeat):
        started = time.perf_counter()
        check(client, NAMES, batch)
        took.append(time.perf_counter() - started)
    return statistics.median(took) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000],
                        help="inference rows in the store, one measurement each")
    parser.add_argument("--repeat", type=int, default=20, help="checks per measurement (the median is reported)")
    args = parser.parse_args()
    client = connect(f"chdb://{tempfile.mkdtemp(prefix='llmwatch-forget-check-')}/clickhouse")
    migrate(client, Retention())
    window = datetime.now(UTC) - timedelta(minutes=30)
    batch = [[{"user": f"user-{n % 5}"}, "m", window, 10] for n in range(20)]
    print("| inference rows | check (ms, median) | unbounded lookup, baseline (ms) | check / baseline |")
    print("|---:|---:|---:|---:|")
    for rows in args.rows:
        fill(client, rows)
        ours, base = median_ms(without_forgotten_users, client, batch, args.repeat), \
            median_ms(unbounded, client, batch, args.repeat)
        print(f"| {rows:,} | {ours:.1f} | {base:.1f} | {ours / base:.2f}x |")
    client.close()


if __name__ == "__main__":
    main()

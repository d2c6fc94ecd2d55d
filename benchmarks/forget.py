"""The cost of erasure: `llmwatch forget --user U` (streams/store/admin.py's `forget`) on a chdb store of
N inference events, against two baselines in the same run on the same store.

    python benchmarks/forget.py --out benchmarks/RESULTS.md                    # 10 million events
    python benchmarks/forget.py --events 100000 --out benchmarks/RESULTS.md    # a quick look

The store is a fresh chdb folder brought to the newest schema by the real migrations, then filled with
INSERT ... SELECT FROM numbers(): N inference events over 30 days, `--users` users (each with N/users
events, in 4 sessions), feedback on 5% of the events and prompt + response embeddings (384 floats) on
0.2%, a few thousand dead letters and metric points; the measured users (user-0 ... user-K) have feedback
and embeddings on every event, a cost.user_total point and a dead letter that carries their id, so that
every table `forget` looks at has rows of theirs. Then OPTIMIZE ... FINAL, as a store whose background
merges have caught up.

Each round takes two users of equal size, U and V, and runs, one after the other:
  count:  SELECT count() FROM inference_events WHERE user_id = U   (finding the rows: a read)
  delete: DELETE FROM inference_events WHERE user_id = V           (lightweight, synchronous, as forget's)
  forget: forget(client, [U], [])   (every table: counts with FINAL first, deletes where there are rows)
and checks that nothing of U is left and that every other row is. Seconds are wall time (median of the
rounds), per table from the statements `forget` ran.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clickhouse_connect.driver.client import Client  # noqa: E402

from benchmarks.common import Contention, MachineCpu, code_state, log, machine, write_section  # noqa: E402
from streams.settings import Retention  # noqa: E402
from streams.store.admin import _SYNC, forget  # noqa: E402
from streams.store.client import connect, migrate  # noqa: E402

TITLE = "## Erasure: `llmwatch forget --user` on a store of inference events"
TABLES = ("inference_events", "feedback_events", "embeddings", "drift_reference", "metric_points", "alerts",
          "dead_letters")
THIRTY_DAYS_MS = 30 * 86_400 * 1000


def fill(client: Client, events: int, users: int, measured: int) -> dict[str, float]:
    """The store's rows, table by table; returns the seconds each step took."""
    took: dict[str, float] = {}
    mine = f"(number % {users}) < {measured}"

    def run(step: str, sql: str) -> None:
        started = time.perf_counter()
        client.command(sql, settings={"max_insert_threads": 2})
        took[step] = time.perf_counter() - started
        log(f"  {step}: {took[step]:.1f} s")

    moment = f"now64(3) - toIntervalMillisecond(intDiv(number * {THIRTY_DAYS_MS}, {events}))"
    run("inference_events", f"""
        INSERT INTO inference_events (event_id, schema_version, timestamp, request_id, model, adapter, prompt,
            response_text, prompt_tokens, completion_tokens, latency_ms, status, user_id, session_id, cohort,
            language, cost_total, price_version)
        SELECT generateUUIDv4(number), 1, {moment}, concat('req-', toString(number)),
               concat('model-', toString(number % 4)), if(number % 3 = 0, 'support-v2', NULL),
               concat('How do I reset my password, attempt ', toString(number), '?'),
               'Open Settings, then Security, then Reset password.', 20 + number % 50, 30 + number % 200,
               100 + number % 900, 'ok', concat('user-', toString(number % {users})),
               concat('session-', toString(number % {users}), '-', toString(intDiv(number, {users}) % 4)),
               if(number % 2 = 0, 'pro', 'free'), 'en', (number % 250) / 1e6, 'settings:0123abcd'
        FROM numbers({events})""")
    run("feedback_events", f"""
        INSERT INTO feedback_events (event_id, schema_version, timestamp, request_id, thumbs, score, user_id)
        SELECT generateUUIDv4(number), 1, {moment}, concat('req-', toString(number)),
               if(number % 7 = 0, 'down', 'up'), NULL, concat('user-', toString(number % {users}))
        FROM numbers({events}) WHERE cityHash64(number) % 20 = 0 OR {mine}""")
    run("embeddings", f"""
        INSERT INTO embeddings (event_id, schema_version, timestamp, model, adapter, prompt_version, field, vector)
        SELECT i.event_id, 1, i.timestamp, i.model, '', '', field,
               arrayMap(k -> toFloat32(sin(k + toUInt64OrZero(substring(i.request_id, 5)))), range(384))
        FROM inference_events AS i ARRAY JOIN ['prompt', 'response'] AS field
        WHERE cityHash64(toUInt64OrZero(substring(i.request_id, 5))) % 500 = 0
           OR (toUInt64OrZero(substring(i.request_id, 5)) % {users}) < {measured}""")
    run("drift_reference", "INSERT INTO drift_reference (event_id) SELECT event_id FROM embeddings "
                           "WHERE field = 'prompt' ORDER BY timestamp LIMIT 200")
    run("metric_points", f"""
        INSERT INTO metric_points (event_id, schema_version, timestamp, name, value, window_start, window_seconds,
            model, adapter, prompt_version, labels)
        SELECT generateUUIDv4(number), 1, now64(3), 'cost.user_total', number / 1e4,
               toStartOfMinute(now64(3)) - toIntervalMinute(number % 1000), 60, 'model-0', '', '',
               map('user', concat('user-', toString(number % {users})))
        FROM numbers({max(measured, 1000)})""")
    run("dead_letters", f"""
        INSERT INTO dead_letters (event_id, schema_version, timestamp, origin_topic, origin_partition,
            origin_offset, reason, detail, raw, raw_size, truncated)
        SELECT generateUUIDv4(number), 1, now64(3), 'llm.inference', 0, number, 'invalid', 'latency_ms missing',
               concat('{{"request_id": "bad-', toString(number), '", "user_id": "user-',
                      toString(number % {users}), '"}}'), 60, false
        FROM numbers({max(measured, 2000)})""")
    started = time.perf_counter()
    for table in TABLES:
        client.command(f"OPTIMIZE TABLE {table} FINAL")
    took["OPTIMIZE FINAL"] = time.perf_counter() - started
    log(f"  OPTIMIZE FINAL: {took['OPTIMIZE FINAL']:.1f} s")
    return took


class TimedClient:
    """The client `forget` gets: the same calls, each statement's seconds noted against its table."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seconds: dict[str, float] = defaultdict(float)

    def _note(self, sql: str, started: float) -> None:
        found = re.search(r"\bFROM\s+(\w+)", sql)
        self.seconds[found.group(1) if found else "other"] += time.perf_counter() - started

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.client.query(sql, *args, **kwargs)
        finally:
            self._note(sql, started)

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.client.command(sql, *args, **kwargs)
        finally:
            self._note(sql, started)


def table_counts(client: Client) -> dict[str, int]:
    return {table: int(client.command(f"SELECT count() FROM {table}")) for table in TABLES}  # type: ignore[arg-type]


def left_of(client: Client, user: str) -> dict[str, int]:
    """Rows of `user` in every table `forget` erases from (nothing may be left)."""
    found = {
        "inference_events": f"SELECT count() FROM inference_events WHERE user_id = '{user}' "
                            f"OR startsWith(session_id, '{user.replace('user', 'session')}-')",
        "feedback_events": f"SELECT count() FROM feedback_events WHERE user_id = '{user}'",
        "metric_points": f"SELECT count() FROM metric_points WHERE labels['user'] = '{user}'",
        "dead_letters": f"SELECT count() FROM dead_letters WHERE position(raw, '\"user_id\": \"{user}\"') > 0",
    }
    return {table: int(client.command(sql)) for table, sql in found.items()}  # type: ignore[arg-type]


def one_round(client: Client, users: Sequence[str]) -> dict[str, Any]:
    deleted, forgotten = users
    before = table_counts(client)

    started = time.perf_counter()
    rows = int(client.command(f"SELECT count() FROM inference_events WHERE user_id = '{forgotten}'"))  # type: ignore[arg-type]
    count_seconds = time.perf_counter() - started

    plain = int(client.command(f"SELECT count() FROM inference_events WHERE user_id = '{deleted}'"))  # type: ignore[arg-type]
    started = time.perf_counter()
    client.command(f"DELETE FROM inference_events WHERE user_id = '{deleted}'", settings=_SYNC)
    delete_seconds = time.perf_counter() - started

    timed = TimedClient(client)
    first = MachineCpu.now()
    started = time.perf_counter()
    result = forget(cast(Client, timed), [forgotten], [])
    forget_seconds = time.perf_counter() - started
    contention = Contention.between(first, MachineCpu.now())

    left = left_of(client, forgotten)
    if any(left.values()):
        raise AssertionError(f"forget left rows of {forgotten}: {left}")
    after = table_counts(client)
    expected = {table: before[table] - result["counts"].get(table, 0) - (plain if table == "inference_events" else 0)
                for table in TABLES}
    if after != expected:
        raise AssertionError(f"forget removed other rows: before {before}, counted {result['counts']}, after {after}")
    log(f"  {forgotten}: {rows} inference rows; count {count_seconds:.3f} s, delete {delete_seconds:.3f} s, "
        f"forget {forget_seconds:.3f} s")
    return {"rows": rows, "counts": result["counts"], "count": count_seconds, "delete": delete_seconds,
            "forget": forget_seconds, "tables": dict(timed.seconds), "contention": contention}


def report(args: argparse.Namespace, took: dict[str, float], rounds: list[dict[str, Any]], sizes: dict[str, int],
           command: str) -> str:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    count, delete, erase = median("count"), median("delete"), median("forget")
    filled = sum(seconds for step, seconds in took.items() if step != "OPTIMIZE FINAL")
    counts = rounds[-1]["counts"]
    per_table = {table: statistics.median(r["tables"].get(table, 0.0) for r in rounds) for table in TABLES}
    lines = [
        TITLE, "",
        f"Run on {datetime.now(UTC):%Y-%m-%d}: {machine()}. Code: {code_state()}. Store: chdb (in-process "
        "ClickHouse), a fresh folder, the real migrations.", "",
        f"    {command}", "",
        f"Store: {sizes['inference_events']:,} inference events ({args.users:,} users, "
        f"{args.events // args.users:,} events each, in 4 sessions), {sizes['feedback_events']:,} feedback rows, "
        f"{sizes['embeddings']:,} embedding rows, {sizes['metric_points']:,} metric points, "
        f"{sizes['dead_letters']:,} dead letters. Filled in {filled:.0f} s "
        f"(INSERT ... SELECT FROM numbers()), then OPTIMIZE FINAL of every table ({took['OPTIMIZE FINAL']:.0f} s). "
        f"{len(rounds)} rounds, two users of equal size each (one deleted plainly, one forgotten); the median.", "",
        "| arm | what it does | seconds (median) | vs count | vs plain DELETE |",
        "|---|---|---:|---:|---:|",
        f"| count (baseline) | `SELECT count()` of one user's inference rows | {count:.3f} | 1.00x | "
        f"{count / delete:.2f}x |",
        f"| plain DELETE (baseline) | lightweight DELETE of one user's inference rows, synchronous | {delete:.3f} | "
        f"{delete / count:.1f}x | 1.00x |",
        f"| **forget** | every table: count (FINAL), then DELETE where rows were found | {erase:.3f} | "
        f"{erase / count:.1f}x | {erase / delete:.1f}x |", "",
        "Rows erased per user, and seconds per table (median; a table without rows of the user costs its count only):",
        "",
        "| table | rows of the user | seconds |", "|---|---:|---:|",
        *(f"| {table} | {counts.get(table, 0):,} | {per_table[table]:.3f} |" for table in TABLES),
        "",
        "Contention during the forget arms: " + "; ".join(r["contention"].cell() for r in rounds) + ". "
        "After each round nothing of the user is left in any table, and every other row is (checked).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", type=Path, default=None, help="an empty folder; default: a temporary one")
    parser.add_argument("--out", type=Path, default=None, help="write the section into this RESULTS.md")
    args = parser.parse_args()
    command = "python benchmarks/forget.py" + "".join(
        f" {flag} {value}" for flag, value in (("--events", args.events), ("--users", args.users),
                                               ("--rounds", args.rounds))
        if value != parser.get_default(flag.lstrip("-"))) + (f" --out {args.out}" if args.out else "")
    measured = 2 * args.rounds
    with tempfile.TemporaryDirectory(prefix="llmwatch-forget-") as scratch:
        store = args.store or Path(scratch)
        client = connect(f"chdb://{store.resolve()}")
        try:
            migrate(client, Retention())
            log(f"filling a store of {args.events:,} inference events in {store}")
            took = fill(client, args.events, args.users, measured)
            sizes = table_counts(client)
            rounds = [one_round(client, [f"user-{2 * r}", f"user-{2 * r + 1}"]) for r in range(args.rounds)]
        finally:
            client.close()
    section = report(args, took, rounds, sizes, command)
    print(section)
    if args.out:
        write_section(args.out, section)


if __name__ == "__main__":
    main()

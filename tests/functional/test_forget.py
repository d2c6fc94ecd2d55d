"""`forget` on a real store: nothing of the person is left in any table, and nothing of anyone else goes."""

import asyncio
import json
import os
import random
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from llmwatch.traffic import inference_event
from processors.scoring import Scorers, scored_rows
from processors.text_signals import GroupLexicon
from processors.toxicity import ProfanityCheckScorer
from schemas import FeedbackEvent, MetricPoint
from schemas.errors import StoreError
from schemas.events import DeadLetterEvent, ScoredInferenceEvent, TextEmbedding
from streams.store.admin import ERASED_USER, call_command
from streams.store.runner import StoreRunner
from streams.store.sql import run_query
from streams.store.writer import ClickHouseWriter

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
SCORERS = Scorers(ProfanityCheckScorer(), 0.5, GroupLexicon.load(), SentimentIntensityAnalyzer())
TABLES = ("inference_events", "feedback_events", "embeddings", "drift_reference", "metric_points", "dead_letters")


def _count(store: StoreRunner, sql: str) -> int:
    return int(asyncio.run(store.call(run_query, sql)).rows[0][0])


def _snapshot(store: StoreRunner) -> dict[str, int]:
    return {t: _count(store, f"SELECT count() FROM {t} FINAL") for t in TABLES}


def _traffic(store: StoreRunner, who: str, session: str, n: int) -> None:
    rng = random.Random(who)
    events = [inference_event(rng).model_copy(update={
        "request_id": f"forget-{who}-{i}", "user_id": who, "session_id": session, "model": "forget-test",
        "timestamp": NOW + timedelta(seconds=i)}) for i in range(n)]
    writer = ClickHouseWriter(store, max_rows=1000, max_backoff_seconds=1)
    asyncio.run(writer.write_rows(ScoredInferenceEvent, scored_rows(events, SCORERS)))
    feedback = [FeedbackEvent(request_id=e.request_id, thumbs="up", timestamp=NOW) for e in events[:3]]
    feedback.append(FeedbackEvent(request_id=f"forget-{who}-unknown", thumbs="down", user_id=who, timestamp=NOW))
    embeddings = [TextEmbedding(event_id=e.event_id, timestamp=e.timestamp, model="forget-test", adapter="",
                                prompt_version="", field="prompt", vector=[0.1, 0.2]) for e in events[:4]]
    raw = json.dumps({"request_id": "x", "model": "forget-test", "user_id": who, "latency_ms": "slow"}).encode()
    dead = DeadLetterEvent(origin_topic="llm.inference", origin_partition=0, origin_offset=hash(who) % 10_000,
                           reason="invalid_fields", detail="latency_ms", raw=raw, raw_size=len(raw), truncated=False,
                           timestamp=NOW)
    point = MetricPoint(name="cost.user_total", value=1.0, model="forget-test", labels={"user": who},
                        window_start=NOW, window_seconds=60, timestamp=NOW)
    for batch in (feedback, embeddings, [dead], [point]):
        assert asyncio.run(writer.write(batch)) == []
    ids = ", ".join(f"'{e.event_id}'" for e in events[:2])
    sql = f"INSERT INTO drift_reference (event_id) SELECT arrayJoin([{ids}])"
    asyncio.run(store.call(lambda client: client.command(sql)))


def _left_of(store: StoreRunner, who: str) -> dict[str, int]:
    return {
        "inference_events": _count(store, f"SELECT count() FROM inference_events WHERE user_id = '{who}'"),
        "feedback_events": _count(store, "SELECT count() FROM feedback_events "
                                         f"WHERE user_id = '{who}' OR request_id LIKE 'forget-{who}-%'"),
        "embeddings": _count(store, "SELECT count() FROM embeddings WHERE model = 'forget-test' AND event_id NOT IN "
                                    "(SELECT event_id FROM inference_events)"),
        "drift_reference": _count(store, "SELECT count() FROM drift_reference WHERE event_id NOT IN "
                                         "(SELECT event_id FROM inference_events)"),
        "metric_points": _count(store, f"SELECT count() FROM metric_points WHERE labels['user'] = '{who}'"),
        "dead_letters": _count(store, f"SELECT count() FROM dead_letters WHERE position(raw, '{who}') > 0"),
    }


def test_forget_a_user_leaves_nothing_of_them_and_everyone_else_untouched(store: StoreRunner) -> None:
    _traffic(store, "alice", "s-alice", 8)
    _traffic(store, "bob", "s-bob", 6)
    before = _snapshot(store)
    assert _left_of(store, "alice")["inference_events"] == 8 and _left_of(store, "alice")["dead_letters"] == 1

    result = asyncio.run(store.call(call_command, "forget", {"users": ["alice"], "sessions": []}))

    assert result["counts"] == {"feedback_events": 4, "embeddings": 4, "drift_reference": 2, "metric_points": 1,
                                "alerts": 0, "dead_letters": 1, "inference_events": 8}
    assert set(result["spans"]) == {"forget-test"}
    assert _left_of(store, "alice") == dict.fromkeys(_left_of(store, "alice"), 0)
    after = _snapshot(store)
    assert {t: before[t] - after[t] for t in TABLES} == {t: result["counts"][t] for t in TABLES}
    assert _count(store, "SELECT count() FROM inference_events WHERE user_id = 'bob'") == 6
    assert _count(store, "SELECT count() FROM feedback_events WHERE request_id LIKE 'forget-bob-%' "
                         "OR user_id = 'bob'") == 4
    assert _count(store, "SELECT count() FROM dead_letters WHERE position(raw, 'bob') > 0") == 1

    again = asyncio.run(store.call(call_command, "forget", {"users": ["alice"], "sessions": []}))
    assert set(again["counts"].values()) == {0}


def test_a_point_for_a_forgotten_user_that_arrives_after_the_erasure_is_stored_without_them(
        store: StoreRunner) -> None:
    """What a window pass computed from the rows just before `forget` deleted them reaches the store after."""
    _traffic(store, "frank", "s-frank", 3)
    _traffic(store, "gina", "s-gina", 3)
    asyncio.run(store.call(call_command, "forget", {"users": ["frank"], "sessions": []}))
    late = [MetricPoint(name="cost.user_total", value=2.0, model="forget-test", labels={"user": who, "pass": "late"},
                        window_start=NOW, window_seconds=60, timestamp=NOW) for who in ("frank", "gina")]
    assert asyncio.run(ClickHouseWriter(store, max_rows=100, max_backoff_seconds=1).write(late)) == []
    stored = asyncio.run(store.call(run_query, "SELECT labels FROM metric_points WHERE labels['pass'] = 'late' "
                                               "ORDER BY labels['user']")).rows
    assert [row[0] for row in stored] == [{"user": ERASED_USER, "pass": "late"}, {"user": "gina", "pass": "late"}]


def test_forget_a_session(store: StoreRunner) -> None:
    _traffic(store, "carol", "s-carol", 5)
    result = asyncio.run(store.call(call_command, "forget", {"users": [], "sessions": ["s-carol"]}))
    assert result["counts"]["inference_events"] == 5
    assert result["counts"]["feedback_events"] == 3  # her feedback by request id; one by user id alone stays
    assert _count(store, "SELECT count() FROM inference_events WHERE session_id = 's-carol'") == 0


def test_forget_needs_someone(store: StoreRunner) -> None:
    with pytest.raises(StoreError, match="user id or a session id"):
        asyncio.run(store.call(call_command, "forget", {"users": [""], "sessions": []}))


POPULATE = """
import asyncio, random, sys
from datetime import UTC, datetime
from llmwatch.traffic import inference_event
from schemas.events import InferenceEvent
from streams.settings import load_settings
from streams.store.runner import StoreRunner
from streams.store.writer import ClickHouseWriter
from streams.store.sql import run_query
settings = load_settings()
store = StoreRunner(settings.store_dsn)
store.open(settings.retention)
if sys.argv[1] == "write":
    rng = random.Random(1)
    events = [inference_event(rng).model_copy(update={"user_id": "dave" if i % 2 else "erin",
              "timestamp": datetime.now(UTC)}) for i in range(10)]
    assert asyncio.run(ClickHouseWriter(store, max_rows=100, max_backoff_seconds=1).write(events)) == []
else:
    print(asyncio.run(store.call(run_query, "SELECT groupArray(ifNull(user_id, '')) FROM inference_events")).rows)
store.close()
"""


def test_the_cli_forgets_a_user_and_prints_counts_per_table(tmp_path: Path) -> None:
    env = {**os.environ, "LLMWATCH_DATA_DIR": str(tmp_path), "LLMWATCH_SERVING__USER_IDS": "keep"}
    subprocess.run([sys.executable, "-c", POPULATE, "write"], env=env, check=True, timeout=120)
    forgot = subprocess.run([sys.executable, "-m", "llmwatch", "forget", "--user", "dave"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert forgot.returncode == 0, forgot.stderr
    assert re.search(r"inference_events\s*│\s*5\b", forgot.stdout), forgot.stdout
    left = subprocess.run([sys.executable, "-c", POPULATE, "read"], env=env, capture_output=True, text=True,
                          check=True, timeout=120).stdout
    assert "dave" not in left and left.count("erin") == 5

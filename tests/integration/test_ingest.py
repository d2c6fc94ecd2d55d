"""Events through the real broker and a real worker process into the real store."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer

from llmwatch.traffic import inference_event
from schemas import DeadLetterEvent, FeedbackEvent
from tests.integration.conftest import Worker, to_env, wait_until

pytestmark = pytest.mark.integration

BAD_INPUT = [
    ("not_json", b"this is not json {"),
    ("invalid_utf8", b'{"request_id": "\xff\xfe", "model": "m"}'),
    ("invalid_fields", b'{"request_id": "r-missing-model", "prompt": "hi"}'),
    ("invalid_fields", b'{"request_id": "r", "model": "m", "prompt": "hi", "latency_ms": "fast"}'),
    ("unknown_schema_version",
     b'{"schema_version": 99, "request_id": "r", "model": "m", "prompt": "hi", "latency_ms": 1}'),
    ("not_an_object", b'["an", "array"]'),
    ("empty", b""),
]
"""Each kind of bad input and the reason the worker must give, written here rather than taken from the product."""


def test_valid_events_become_rows(worker: Worker) -> None:
    rng = random.Random(11)
    events = [inference_event(rng) for _ in range(300)]
    feedback = [FeedbackEvent(request_id=e.request_id, thumbs="down", comment="meh") for e in events[:40]]
    with worker.publisher() as publisher:
        for event in events:
            publisher.publish(event)
        for said in feedback:
            publisher.publish(said)
    ids = ",".join(f"'{e.request_id}'" for e in events)
    wait_until(lambda: worker.count(f"SELECT count() FROM inference_events WHERE request_id IN ({ids})") == 300,
               60, "300 inference rows")
    wait_until(lambda: worker.count(f"SELECT count() FROM feedback_events WHERE request_id IN ({ids})") == 40,
               60, "40 feedback rows")
    sample = events[0]
    (row,) = worker.sql(
        "SELECT model, adapter, latency_ms, prompt_tokens, cohort, attributes, messages, status "
        f"FROM inference_events WHERE event_id = '{sample.event_id}'")
    assert row[:6] == [sample.model, sample.adapter, sample.latency_ms, sample.prompt_tokens, sample.cohort,
                       sample.attributes]
    assert json.loads(row[6]) == [m.model_dump() for m in sample.messages or []]
    assert row[7] == sample.status


def test_every_kind_of_bad_input_is_dead_lettered_with_its_reason(worker: Worker) -> None:
    oversized = b'{"pad": "' + b"x" * (worker.settings.max_event_bytes + 10) + b'"}'
    bad = [*BAD_INPUT, ("too_large", oversized)]
    topic = worker.settings.topics.inference
    with worker.publisher() as publisher:
        sent = [publisher.publish_raw(topic, payload).get(timeout=30) for _, payload in bad]
    offsets = ",".join(str(meta.offset) for meta in sent)
    where = f"origin_topic = '{topic}' AND (origin_partition, origin_offset) IN " + \
        "(" + ",".join(f"({m.partition},{m.offset})" for m in sent) + ")"
    wait_until(lambda: worker.count(f"SELECT count() FROM dead_letters WHERE {where}") == len(bad), 60,
               f"{len(bad)} dead letters (offsets {offsets})")
    stored = {(p, o): (reason, raw_size, detail) for p, o, reason, raw_size, detail in worker.sql(
        f"SELECT origin_partition, origin_offset, reason, raw_size, detail FROM dead_letters WHERE {where}")}
    for (reason, payload), meta in zip(bad, sent, strict=True):
        got_reason, raw_size, detail = stored[(meta.partition, meta.offset)]
        assert (got_reason, raw_size) == (reason, len(payload))
        assert detail

    consumer = KafkaConsumer(worker.settings.topics.deadletter, bootstrap_servers=worker.settings.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000)
    letters = [DeadLetterEvent.model_validate_json(message.value) for message in consumer]
    consumer.close()
    on_topic = {(letter.origin_partition, letter.origin_offset): letter for letter in letters
                if letter.origin_topic == topic}
    for (reason, payload), meta in zip(bad, sent, strict=True):
        letter = on_topic[(meta.partition, meta.offset)]
        assert letter.reason == reason
        assert letter.raw == payload[: worker.settings.dead_letter_raw_bytes]
        assert letter.truncated == (len(payload) > worker.settings.dead_letter_raw_bytes)


def test_counts_reconcile_with_what_was_published_on_both_topics(make_worker: Callable[[], Worker]) -> None:
    """A worker of its own, so that its counters and tables hold this test's events and no other's."""
    worker = make_worker().start()
    topics = worker.settings.topics
    rng = random.Random("counts-reconcile")
    garbage = b"\x00\xff garbage"
    inference: list[str] = []
    feedback: list[str] = []
    bad: list[tuple[str, int, int]] = []
    with worker.publisher() as publisher:
        for n in range(200):
            if n % 10 == 0:
                for topic in (topics.inference, topics.feedback):
                    meta = publisher.publish_raw(topic, garbage).get(timeout=30)
                    bad.append((topic, meta.partition, meta.offset))
            else:
                event = inference_event(rng)
                publisher.publish(event)
                publisher.publish(FeedbackEvent(request_id=f"rec-{n}", score=rng.random()))
                inference.append(event.request_id)
                feedback.append(f"rec-{n}")

    def received() -> dict[str, int]:
        counts = worker.health()["ingest"]
        return {table: counts.get(table, {}).get("received", 0) for table in ("inference_events", "feedback_events")}

    def stored() -> int:
        return worker.count("SELECT (SELECT count() FROM inference_events) + (SELECT count() FROM feedback_events)"
                            " + (SELECT count() FROM dead_letters)")

    wait_until(lambda: sum(received().values()) >= 400 and stored() >= 400, 120,
               "the worker to take all 400 messages and store each as a row or a dead letter")
    ingest = worker.health()["ingest"]
    for table in ("inference_events", "feedback_events"):
        assert {key: ingest[table][key] for key in ("received", "stored", "dead_lettered")} == \
            {"received": 200, "stored": 180, "dead_lettered": 20}, table
    assert sorted(row[0] for row in worker.sql("SELECT request_id FROM inference_events")) == sorted(inference)
    assert sorted(row[0] for row in worker.sql("SELECT request_id FROM feedback_events")) == sorted(feedback)
    letters = worker.sql("SELECT origin_topic, origin_partition, origin_offset, reason FROM dead_letters")
    assert sorted(tuple(row) for row in letters) == sorted((*origin, "invalid_utf8") for origin in bad)
    assert worker.process is not None and worker.process.poll() is None


def test_llmwatch_sql_returns_what_was_written(worker: Worker) -> None:
    event = inference_event(random.Random(31))
    with worker.publisher() as publisher:
        publisher.publish(event)
    wait_until(lambda: worker.count(f"SELECT count() FROM inference_events WHERE event_id = '{event.event_id}'"),
               60, "the event")
    env = to_env(worker.settings)
    sql = f"SELECT request_id, model, latency_ms FROM inference_events WHERE event_id = '{event.event_id}'"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        import os

        return subprocess.run([sys.executable, "-m", "llmwatch", "sql", *args], capture_output=True, text=True,
                              env=os.environ | env, timeout=60)

    as_json = cli(sql, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"request_id": event.request_id, "model": event.model,
                                          "latency_ms": event.latency_ms}
    as_csv = cli(sql, "--format", "csv")
    assert as_csv.stdout.splitlines() == ["request_id,model,latency_ms",
                                          f"{event.request_id},{event.model},{event.latency_ms}"]
    as_table = cli(sql)
    assert event.request_id in as_table.stdout
    wrong = cli("SELECT nope FROM inference_events")
    assert wrong.returncode == 1
    assert "nope" in wrong.stderr

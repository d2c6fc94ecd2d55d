"""The README's guarantees, tried the way outside producers and users meet them.

Producers here are librdkafka (confluent-kafka), not our SDK: what a Go or Java app would send, with and
without `event_id`. Rows are counted by request id, not only by event id, since a duplicate that got a
second id is exactly what FINAL cannot collapse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
from confluent_kafka import Producer
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from llmwatch.traffic import inference_event
from schemas import DeadLetterEvent, FeedbackEvent, InferenceEvent, MetricPoint
from schemas.errors import BrokerError
from schemas.topics import model_key
from streams.kafka.broker import EmbeddedBroker, port_open
from streams.kafka.topics import ensure_topics
from streams.publisher import Publisher
from streams.settings import Settings, Topics
from tests.integration.conftest import Worker, free_port, to_env, wait_until

pytestmark = pytest.mark.integration


def produce(settings: Settings, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Publish with librdkafka (acks=all); returns how many the broker acknowledged."""
    return len(produce_at(settings, topic, messages))


def produce_at(settings: Settings, topic: str,
               messages: Iterable[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    """Publish with librdkafka (acks=all); returns where each message landed: (partition, offset), in order."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all", "linger.ms": 5,
                         "client.id": "guarantees-test"})
    landed: dict[int, tuple[int, int]] = {}
    failed = []

    def on_delivery(n: int, error: object, message: object) -> None:
        if error is None:
            landed[n] = (message.partition(), message.offset())  # type: ignore[attr-defined]
        else:
            failed.append(error)

    for n, (key, value) in enumerate(messages):
        while True:
            try:
                producer.produce(topic, value=value, key=key,
                                 on_delivery=partial(on_delivery, n))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0, "librdkafka could not deliver everything"
    assert not failed, failed[:3]
    return [landed[n] for n in sorted(landed)]


def sql_cli(settings: Settings, sql: str) -> list[list[str]]:
    """`llmwatch sql` in a process of its own: the test process must not open a worker's chdb store itself."""
    result = subprocess.run([sys.executable, "-m", "llmwatch", "sql", "--format", "csv", sql], capture_output=True,
                            text=True, env=os.environ | to_env(settings), timeout=120)
    assert result.returncode == 0, result.stderr
    return [line.split(",") for line in result.stdout.splitlines()[1:]]


def own_stack(tmp_path: Path) -> tuple[EmbeddedBroker, Settings]:
    """A broker of its own (to stop and start) and a worker's settings against it."""
    run = uuid.uuid4().hex[:8]
    broker = EmbeddedBroker(free_port(), log_file=tmp_path / "broker.log")
    broker.start()
    topics = Topics(**{name: f"{run}.{topic}" for name, topic in Topics().model_dump().items()
                       if isinstance(topic, str)})
    settings = Settings(data_dir=tmp_path / "worker", kafka_bootstrap_servers=broker.bootstrap_servers,
                        topics=topics, app_id=f"llmwatch-guarantees-{run}", web_port=free_port(),
                        ingest_flush_seconds=0.2, _env_file=None)
    ensure_topics(broker.bootstrap_servers, topics)
    return broker, settings


N = 20_000


def committed(settings: Settings, topic: str) -> int:
    """Messages of the topic the worker's group has committed, over all partitions."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
    try:
        offsets = admin.list_group_offsets({settings.app_id: partitions})[settings.app_id]
    finally:
        admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


def test_a_worker_killed_mid_stream_stores_each_request_once_whether_or_not_producers_send_ids(
        make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(ingest_batch_size=500)
    rng = random.Random(9)
    messages = []
    for n in range(N):
        event = json.loads(inference_event(rng).model_dump_json())
        if n % 2:  # half of them leave event_id out, and some of those the timestamp too
            del event["event_id"]
            if n % 4 == 1:
                del event["timestamp"]
        messages.append((model_key(event["model"], event["adapter"]).encode(), json.dumps(event).encode()))
    assert produce(worker.settings, worker.settings.topics.inference, messages) == N

    worker.start()
    wait_until(lambda: worker.count("SELECT count() FROM inference_events") >= N // 20, 120, "some rows")
    for _ in range(4):  # a kill that lands just after a commit would replay nothing: then kill again
        assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
        stored_at_kill = int(sql_cli(worker.settings, "SELECT count() FROM inference_events")[0][0])
        assert stored_at_kill < N, "everything was stored before the kill: nothing was tested"
        if committed(worker.settings, worker.settings.topics.inference) < stored_at_kill:
            break  # stored past the last commit: read again after the restart
        worker.start()

        def grown(more: int = stored_at_kill + N // 20) -> bool:
            return worker.count("SELECT count() FROM inference_events") >= more

        wait_until(grown, 120, "more rows")
    else:
        pytest.fail("four kills each landed on a commit: nothing would be replayed, nothing tested")
    worker.start()
    wait_until(lambda: worker.health()["ingest"].get("inference_events", {}).get("received", 0) +
               stored_at_kill >= N, 240, "the rest of the topic to be read")
    wait_until(lambda: worker.count("SELECT uniqExact(request_id) FROM inference_events") == N, 240,
               f"{N} request ids after the restart")

    received_after = worker.health()["ingest"]["inference_events"]["received"]
    assert stored_at_kill + received_after > N, "nothing was read twice after the kill"
    assert worker.count("SELECT count() FROM inference_events") == N  # what a reader sees (FINAL)
    # Below FINAL: every stored copy of a request carries one id, so a replay can never show twice.
    assert worker.sql("SELECT request_id, uniqExact(event_id) AS ids FROM inference_events GROUP BY request_id "
                      "HAVING ids > 1 LIMIT 5 SETTINGS final = 0") == []
    assert worker.count("SELECT count() FROM inference_events WHERE event_id = "
                        "toUUID('00000000-0000-0000-0000-000000000000')") == 0
    worker.stop()


def test_new_poison_at_an_offset_reused_after_a_broker_restart_keeps_the_old_dead_letter(tmp_path: Path) -> None:
    broker, settings = own_stack(tmp_path)
    worker = Worker(settings, tmp_path / "worker.log")
    poison = b'{"request_id": "poison", "model": "m", "prompt": "hi", "latency_ms": "slow"}'
    valid_without_id = b'{"request_id": "no-id", "model": "m", "prompt": "hi", "latency_ms": 3}'
    topic = settings.topics.inference
    try:
        worker.start()
        produce(settings, topic, [(b"m", poison), (b"m", valid_without_id)])
        wait_until(lambda: worker.count("SELECT count() FROM dead_letters") == 1 and
                   worker.count("SELECT count() FROM inference_events") == 1, 60, "the first poison and event")
        worker.stop()
        broker.stop()
        broker.start()  # memory storage: empty, offsets start again at 0
        ensure_topics(broker.bootstrap_servers, settings.topics)
        worker.start()
        produce(settings, topic, [(b"m", poison), (b"m", valid_without_id)])  # the very same bytes again
        wait_until(lambda: worker.count("SELECT count() FROM dead_letters") == 2, 60, "the second dead letter")
        wait_until(lambda: worker.count("SELECT count() FROM inference_events") == 2, 60, "the second event")
        letters = worker.sql("SELECT origin_partition, origin_offset, reason, raw FROM dead_letters")
        assert letters[0] == letters[1], "both poison messages sat at the same place: the collision was tested"
        assert letters[0][2] == "invalid_fields"
        assert worker.count("SELECT uniqExact(event_id) FROM inference_events WHERE request_id = 'no-id'") == 2
    finally:
        if worker.process is not None:
            worker.stop()
        broker.stop()


def test_bad_input_of_every_shape_is_dead_lettered_with_its_reason_and_counts_reconcile(worker: Worker) -> None:
    topics = worker.settings.topics
    now = datetime.now(UTC)
    event = json.loads(InferenceEvent(request_id="shape", model="m", prompt="p", latency_ms=1).model_dump_json())
    inference = [
        (None, "empty"),  # a tombstone
        (b"null", "not_an_object"),
        (b'{"request_id": "\\ud800", "model": "m", "prompt": "p", "latency_ms": 1}', "not_json"),
        ('{"request_id": "\ud800", "model": "m", "prompt": "p", "latency_ms": 1}'.encode("utf-8", "surrogatepass"),
         "invalid_utf8"),
        (json.dumps(event | {"event_id": str(uuid.uuid4()), "timestamp": "2300-01-01T00:00:00Z"}).encode(),
         "timestamp_out_of_range"),
        (json.dumps(event | {"event_id": str(uuid.uuid4()),
                             "timestamp": (now - timedelta(days=400)).isoformat()}).encode(), "older_than_retention"),
    ]
    point = json.loads(MetricPoint(name="x", value=1, window_start=now, window_seconds=10).model_dump_json())
    metrics = [
        (b"not json", "not_json"),
        (json.dumps(point | {"window_seconds": 0}).encode(), "invalid_fields"),
        (json.dumps(point | {"event_id": str(uuid.uuid4()),
                             "window_start": (now - timedelta(days=400)).isoformat()}).encode(),
         "older_than_retention"),
        (None, "empty"),
    ]
    before = {table: dict(worker.health()["ingest"].get(table, {})) for table in ("inference_events", "metric_points")}
    expected: dict[Any, Any] = {}
    for topic, cases in ((topics.inference, inference), (topics.metrics, metrics)):
        where = produce_at(worker.settings, topic, [(b"shapes", value) for value, _ in cases])
        expected |= {(topic, partition, offset): reason for (partition, offset), (_, reason) in zip(where, cases,
                                                                                                  strict=True)}
    condition = " OR ".join(f"(origin_topic = '{t}' AND origin_partition = {p} AND origin_offset = {o})"
                            for t, p, o in expected)
    wait_until(lambda: worker.count(f"SELECT count() FROM dead_letters WHERE {condition}") == len(expected), 60,
               f"{len(expected)} dead letters")
    stored = {(t, p, o): reason for t, p, o, reason in worker.sql(
        f"SELECT origin_topic, origin_partition, origin_offset, reason FROM dead_letters WHERE {condition}")}
    assert stored == expected
    assert worker.count("SELECT count() FROM inference_events WHERE request_id = 'shape'") == 0
    for table, sent in (("inference_events", len(inference)), ("metric_points", len(metrics))):
        counts = worker.health()["ingest"][table]
        assert counts["received"] == counts["stored"] + counts["dead_lettered"]
        assert counts["dead_lettered"] - before[table].get("dead_lettered", 0) >= sent


def test_llmwatch_sql_is_read_only_through_the_worker_and_llmwatch_writes_through_its_commands(
        worker: Worker) -> None:
    env = os.environ | to_env(worker.settings)

    def llmwatch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "llmwatch", *args], capture_output=True, text=True, env=env,
                              timeout=120)

    for statement in ("DROP TABLE inference_events", "CREATE TABLE scratch (a Int32) ENGINE = Memory",
                      "ALTER TABLE dead_letters DELETE WHERE 1", "INSERT INTO drift_reference (event_id) "
                      "VALUES (generateUUIDv4())"):
        refused = llmwatch("sql", statement)
        assert refused.returncode == 1, refused.stdout
        assert "read-only" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert llmwatch("sql", "USE system").returncode == 0  # harmless: the query's session is its own
    tables = {row[0] for row in worker.sql("SHOW TABLES")}
    assert {"inference_events", "dead_letters"} <= tables and "scratch" not in tables
    assert worker.count("SELECT count() FROM system.one") == 1
    assert worker.count("SELECT count() FROM inference_events") >= 0  # still the default database

    migrated = llmwatch("migrate")
    assert migrated.returncode == 0 and "schema version" in migrated.stdout, migrated.stderr
    assert llmwatch("drift", "clear-reference").returncode == 0
    empty = llmwatch("drift", "set-reference", "--since", "2001-01-01T00:00", "--until", "2001-01-02T00:00")
    assert empty.returncode == 1 and "only 0 sampled events" in empty.stderr, empty.stderr


def test_the_sdk_raises_at_once_when_kafka_is_down_and_never_loses_an_event_quietly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerError, match="cannot reach Kafka"):
        Publisher(f"127.0.0.1:{free_port()}", timeout_seconds=2)
    assert time.monotonic() - started < 30, "the app waited for Kafka far longer than its timeout"

    broker = EmbeddedBroker(free_port(), log_file=tmp_path / "broker.log")
    broker.start()
    try:
        publisher = Publisher(broker.bootstrap_servers, timeout_seconds=2, delivery_timeout_seconds=4)
        publisher.publish(FeedbackEvent(request_id="before", thumbs="up")).get(timeout=30)
        broker.stop()

        started = time.monotonic()
        taken = FeedbackEvent(request_id="taken-while-down", thumbs="down")
        publisher.publish(taken)  # Kafka's metadata is known: accepted into the buffer, not acknowledged
        with pytest.raises(BrokerError, match="was not published"):
            publisher.publish_raw("a-topic-never-seen", b"{}")
        with caplog.at_level(logging.ERROR, logger="streams.publisher"), \
                pytest.raises(BrokerError, match=str(taken.event_id)):
            publisher.close()
        assert time.monotonic() - started < 30, "the app waited for Kafka far longer than its timeouts"
        assert any(str(taken.event_id) in record.getMessage() for record in caplog.records)
    finally:
        broker.stop()


@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[Path]:
    """A small tmpfs at `path` (the store's folder), so that the test can fill it: a real outage of chdb's disk."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the dev machines run as root)")
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_offsets_stay_uncommitted_while_the_store_is_down_and_the_backlog_lands_after(
        make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(retry_max_backoff_seconds=1.0)
    with small_disk(worker.settings.data_dir / "clickhouse") as disk:
        worker.start()
        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True, check=False)
        rng = random.Random(41)
        events = [inference_event(rng) for _ in range(300)]
        topic = worker.settings.topics.inference
        produce(worker.settings, topic, [(b"k", e.model_dump_json().encode()) for e in events] +
                [(b"k", b"garbage while the disk is full")])

        def retrying() -> bool:
            return worker.health()["writer"].get("inference_events", {}).get("retries", 0) >= 5
        wait_until(retrying, 120, "the writer to wait out the full disk")
        time.sleep(3)  # three commit intervals
        assert committed(worker.settings, topic) == 0, "offsets were committed for rows that are not stored"
        assert worker.health()["ingest"].get("inference_events", {}).get("received", 0) == 0

        filler.unlink()
        wait_until(lambda: worker.count("SELECT count() FROM inference_events") == 300, 120, "the backlog")
        wait_until(lambda: worker.count("SELECT count() FROM dead_letters") == 1, 60, "the garbage's dead letter")
        assert worker.count("SELECT count() FROM dead_letters WHERE reason = 'rejected_by_store'") == 0
        wait_until(lambda: committed(worker.settings, topic) == 301, 60, "the offsets to be committed after")
        worker.stop(signal.SIGKILL)  # before the disk goes: how a worker stops is the Ctrl-C tests' business


REFUSING = """
import sys
from streams.settings import Retention
from streams.store.client import connect, migrate
client = connect(sys.argv[1])
migrate(client, Retention())
client.command("ALTER TABLE inference_events ADD CONSTRAINT test_refuses "
               "CHECK request_id NOT IN ('refuse-me', 'refuse-me-twice')")
client.command("ALTER TABLE dead_letters ADD CONSTRAINT test_refuses_letter CHECK position(raw, 'refuse-me-twice') = 0")
client.close()
"""
"""Constraints the test adds to the worker's store before it starts: the real engine refusing real rows."""


def test_rows_the_store_refuses_are_dead_lettered_and_a_dead_letter_it_refuses_is_on_the_topic(
        make_worker: Callable[..., Worker]) -> None:
    worker = make_worker()
    prepared = subprocess.run([sys.executable, "-c", REFUSING, worker.settings.store_dsn], capture_output=True,
                              text=True, timeout=120)
    assert prepared.returncode == 0, prepared.stderr
    worker.start()
    rng = random.Random(43)
    fine = [inference_event(rng) for _ in range(20)]
    refused = fine[0].model_copy(update={"event_id": uuid.uuid4(), "request_id": "refuse-me"})
    twice = fine[0].model_copy(update={"event_id": uuid.uuid4(), "request_id": "refuse-me-twice"})
    produce(worker.settings, worker.settings.topics.inference,
            [(b"k", e.model_dump_json().encode()) for e in [*fine[:10], refused, twice, *fine[10:]]])

    wait_until(lambda: worker.count("SELECT count() FROM inference_events") == 20, 60, "the 20 good rows")
    wait_until(lambda: worker.count("SELECT count() FROM dead_letters") == 1, 60, "the refused row's dead letter")
    (reason, detail, raw), = worker.sql("SELECT reason, detail, raw FROM dead_letters")
    assert reason == "rejected_by_store" and "test_refuses" in detail and "refuse-me" in raw
    counts = worker.health()["ingest"]["inference_events"]
    assert counts == counts | {"received": 22, "stored": 20, "dead_lettered": 2, "dead_letters_unstored": 1}

    consumer = KafkaConsumer(worker.settings.topics.deadletter, bootstrap_servers=worker.settings.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000, session_timeout_ms=6000,
                             heartbeat_interval_ms=1000)
    letters = [DeadLetterEvent.model_validate_json(message.value) for message in consumer]
    consumer.close()
    assert sorted(b"refuse-me-twice" in letter.raw for letter in letters) == [False, True]
    assert "could not be stored either" in worker.log_path.read_text()
    worker.stop()


def test_ctrl_c_stops_up_within_seconds_and_leaves_no_child(tmp_path: Path) -> None:
    kafka_port, web_port, dashboard_port = free_port(), free_port(), free_port()
    env = os.environ | {"LLMWATCH_DATA_DIR": str(tmp_path), "LLMWATCH_EMBEDDED_KAFKA_PORT": str(kafka_port),
                        "LLMWATCH_WEB_PORT": str(web_port), "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": "",
                        "LLMWATCH_DASHBOARD__PORT": str(dashboard_port)}
    took = ctrl_c_and_check(tmp_path, env, lambda: (tmp_path / "worker.json").exists()
                            and port_open("127.0.0.1", dashboard_port), ports=[kafka_port, dashboard_port])
    print(f"llmwatch up stopped {took:.1f} s after Ctrl-C")


def ctrl_c_and_check(tmp_path: Path, env: dict[str, str], ready: Callable[[], bool], ports: list[int],
                     start_timeout: float = 180, stop_bound: float = 30) -> float:
    """Start `llmwatch up` in a process group of its own, Ctrl-C it as a terminal does (SIGINT to the whole
    group), and check that it exits 0 within `stop_bound` seconds with no descendant left. Returns the seconds."""
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "llmwatch", "up"], stdout=log, stderr=subprocess.STDOUT,
                              env=env, start_new_session=True)
    try:
        wait_until(lambda: up.poll() is None and ready(), start_timeout, "llmwatch up to be ready")
        settings = Settings(_env_file=None, data_dir=tmp_path, embedded_kafka_port=int(env[
            "LLMWATCH_EMBEDDED_KAFKA_PORT"]))
        with Publisher.from_settings(settings) as publisher:  # something in flight when Ctrl-C comes
            for event in [inference_event(random.Random(n)) for n in range(500)]:
                publisher.publish(event)
        children = psutil.Process(up.pid).children(recursive=True)
        assert children, "llmwatch up started no child: nothing to check"
        started = time.monotonic()
        os.killpg(up.pid, signal.SIGINT)
        code = up.wait(stop_bound + 60)
        took = time.monotonic() - started
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    log_text = log_path.read_text(errors="replace")
    assert code == 0, log_text[-3000:]
    assert took < stop_bound, f"llmwatch up took {took:.0f} s to stop after Ctrl-C:\n{log_text[-3000:]}"
    _, left = psutil.wait_procs(children, timeout=10)  # multiprocessing's resource tracker goes at EOF, a moment later
    assert not left, f"left behind: {[(c.pid, ' '.join(c.cmdline())[:80]) for c in left]}"
    assert "Error while stopping" not in log_text, log_text[-3000:]
    assert not any(port_open("127.0.0.1", port) for port in ports)
    assert not (tmp_path / "worker.json").exists()
    return took

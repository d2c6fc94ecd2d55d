import json
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmwatch.traffic import inference_event
from schemas import AlertEvent, DeadLetterEvent, FeedbackEvent, InferenceEvent
from schemas.events import Event
from schemas.tables import columns, to_rows
from streams.settings import Settings
from streams.store.client import migration_files, statements, ttl_clause


def test_defaults_run_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMWATCH_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.embedded_broker and settings.embedded_store
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.store_dsn == f"chdb://{tmp_path.resolve()}/clickhouse"


def test_nested_topic_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMWATCH_TOPICS__INFERENCE", "prod.inference")
    monkeypatch.setenv("LLMWATCH_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    settings = Settings()
    assert settings.topics.inference == "prod.inference"
    assert settings.topics.feedback == "llm.feedback"
    assert not settings.embedded_broker


def test_unknown_dsn_scheme_is_refused() -> None:
    with pytest.raises(ValidationError, match="chdb:///abs/dir"):
        Settings(clickhouse_dsn="postgres://x")


def test_rows_follow_the_model_fields_and_store_messages_as_json() -> None:
    event = inference_event(random.Random(3))
    (row,) = to_rows([event])
    cols = columns(InferenceEvent)
    assert len(row) == len(cols)
    assert row[cols.index("event_id")] == event.event_id
    assert json.loads(row[cols.index("messages")])[0]["role"] == "user"


def _dumped_row(event: Event) -> list[object]:
    """The row as `model_dump` gives it: what to_rows built before it read the fields directly."""
    return [json.dumps(value, ensure_ascii=False) if name in type(event).json_fields and value is not None else value
            for name, value in event.model_dump().items()]


def test_rows_read_from_the_fields_equal_the_rows_of_model_dump() -> None:
    rng = random.Random(5)
    chat = inference_event(rng)
    with_prompt = chat.model_copy(update={"messages": None, "prompt": "Grüße, \"quoted\"", "attributes": {"k": "v"}})
    batches: list[list[Event]] = [
        [chat, with_prompt, InferenceEvent.model_validate_json(chat.model_dump_json())],
        [FeedbackEvent(request_id="r", thumbs="down", comment="nö")],
        [DeadLetterEvent(origin_topic="t", origin_partition=1, origin_offset=2, reason="not_json", detail="d",
                         raw=b"\xff{", raw_size=2, truncated=False)],
        [AlertEvent(rule="r", state="firing", metric="m", value=1.0, threshold=0.5, labels={"a": "b"},
                    request_ids=["x"], starts_at=chat.timestamp)],
    ]
    for events in batches:
        rows = to_rows(events)
        assert rows == [_dumped_row(e) for e in events]
        assert all(len(row) == len(columns(type(events[0]))) for row in rows)
    assert json.loads(to_rows([chat])[0][columns(InferenceEvent).index("messages")]) == \
        [m.model_dump() for m in chat.messages or []]


def test_migrations_are_numbered_and_split_into_statements() -> None:
    files = migration_files()
    assert [version for version, _, _ in files] == sorted({version for version, _, _ in files})
    creates = statements(files[0][2])
    assert len(creates) == 8
    assert all(stmt.startswith("CREATE TABLE IF NOT EXISTS") for stmt in creates)


def test_ttl_clause() -> None:
    assert ttl_clause("window_start", 30) == "toDateTime(window_start) + toIntervalDay(30)"


def test_the_gateway_refuses_to_listen_beyond_loopback_without_keys() -> None:
    from schemas.errors import ConfigurationError
    from serving.stack import check_exposure
    from streams.settings import Serving

    check_exposure(Settings(_env_file=None))  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="LLMWATCH_SERVING__API_KEYS"):
        check_exposure(Settings(serving=Serving(host="0.0.0.0"), _env_file=None))  # type: ignore[call-arg]
    check_exposure(Settings(serving=Serving(host="0.0.0.0", api_keys=["k"]), _env_file=None))  # type: ignore[arg-type,call-arg,list-item]

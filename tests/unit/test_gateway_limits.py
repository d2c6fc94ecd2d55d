"""What the gateway bounds on its own: event size (cut, flagged), metric labels, user ids, feedback tokens."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.events import FeedbackEvent
from serving.gateway.metrics import MAX_ADAPTER_LABELS, AdapterLabels
from serving.gateway.recording import MAX_ATTRIBUTES, MAX_MESSAGES, Exchange, Rules, inference_event, redacted_feedback
from serving.gateway.redaction import BUILTIN_KINDS, Redactor
from serving.gateway.tokens import Signer, load_secret

REDACTOR = Redactor.from_settings(BUILTIN_KINDS, {})
LIMIT = 100_000


def exchange(**changes: object) -> Exchange:
    base = Exchange(request_id="r1", endpoint="chat", started_at=datetime(2026, 1, 2, tzinfo=UTC), model="m",
                    adapter=None, requested_model=None, stream=False,
                    messages=[{"role": "user", "content": "Hi"}], response_text="Hello!", latency_s=0.5)
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def size(event: object) -> int:
    return len(event.model_dump_json().encode())  # type: ignore[attr-defined]


@pytest.mark.parametrize(("shape", "limit"), [
    ({"messages": [{"role": "user", "content": "a" * 1_200_000}]}, LIMIT),
    ({"messages": [{"role": "user", "content": [{}] * 150_000}]}, LIMIT),
    ({"messages": [{"role": "user", "content": ""}] * 150_000}, LIMIT),
    ({"messages": [{"role": "user", "content": "\x00" * 300_000}], "response_text": '"' * 300_000}, LIMIT),
    ({"messages": None, "prompt": "ann@example.com " * 20_000}, LIMIT),
    ({"metadata": {f"key-{n}": "v" * 1000 for n in range(5000)}}, LIMIT),
    ({"messages": [{"role": "r" * 256, "content": "x"}] * MAX_MESSAGES}, 4096),  # the structure alone is over
])
def test_no_request_makes_an_event_larger_than_the_limit(shape: dict[str, object], limit: int) -> None:
    event = inference_event(exchange(**shape), REDACTOR, Rules(max_event_bytes=limit))
    assert size(event) <= limit
    assert event.truncated


def test_a_cut_text_keeps_its_start_and_says_how_much_went() -> None:
    event = inference_event(exchange(messages=[{"role": "user", "content": "word " * 100_000}]), REDACTOR,
                            Rules(max_event_bytes=LIMIT))
    content = (event.messages or [])[0].content
    assert content.startswith("word word") and content.endswith(" characters truncated]")
    assert "wor …" not in content  # cut on whitespace, not inside a word


def test_a_cut_never_leaves_half_an_address_behind() -> None:
    text = "x" + " ann.lee@example.com" * 10_000
    event = inference_event(exchange(messages=[{"role": "user", "content": text}]), REDACTOR,
                            Rules(max_event_bytes=LIMIT))
    assert "@" not in event.model_dump_json()


def test_a_long_chat_keeps_its_latest_messages() -> None:
    messages = [{"role": "user", "content": f"turn {n}"} for n in range(1000)]
    event = inference_event(exchange(messages=messages), REDACTOR)
    assert len(event.messages or []) == MAX_MESSAGES and event.truncated
    assert (event.messages or [])[0].content == f"[{1000 - MAX_MESSAGES + 1} earlier messages truncated]"
    assert (event.messages or [])[-1].content == "turn 999"


def test_a_small_event_is_untouched() -> None:
    event = inference_event(exchange(), REDACTOR, Rules(max_event_bytes=LIMIT))
    assert not event.truncated and (event.messages or [])[0].content == "Hi" and event.response_text == "Hello!"


def test_metadata_cannot_spoof_the_gateways_attributes_and_is_bounded() -> None:
    metadata = {"gateway.route": "forged", "gateway.endpoint": "x", **{f"k{n}": "v" for n in range(200)}}
    event = inference_event(exchange(metadata=metadata, client_request_id="mine-1"), REDACTOR)
    assert "gateway.route" not in event.attributes and event.attributes["gateway.endpoint"] == "chat"
    assert event.attributes["gateway.client_request_id"] == "mine-1"
    assert len([key for key in event.attributes if not key.startswith("gateway.")]) == MAX_ATTRIBUTES
    assert event.truncated


def test_personal_data_in_user_and_metadata_is_redacted_or_hashed() -> None:
    raw = exchange(user="ann@example.com", metadata={"session_id": "call 415-555-2671", "note": "bob@example.com"})
    event = inference_event(raw, REDACTOR)
    assert (event.user_id, event.session_id, event.attributes["note"]) == ("[EMAIL]", "call [PHONE]", "[EMAIL]")
    assert event.redactions == {"email": 2, "phone": 1}
    signer = Signer(b"secret")
    hashed = inference_event(raw, REDACTOR, Rules(user_ids="hash", hash_user=signer.user_hash))
    assert hashed.user_id == signer.user_hash("ann@example.com") and "ann" not in (hashed.user_id or "")
    feedback = FeedbackEvent(request_id="r1", thumbs="up", user_id="ann@example.com")
    assert redacted_feedback(feedback, REDACTOR).user_id == "[EMAIL]"
    assert redacted_feedback(feedback, REDACTOR, Rules(user_ids="hash", hash_user=signer.user_hash)).user_id == (
        hashed.user_id)
    assert inference_event(raw, REDACTOR, Rules(user_ids="keep")).user_id == "ann@example.com"


def test_adapter_labels_are_known_or_served_plain_names_and_few() -> None:
    labels = AdapterLabels()
    assert labels.label(None, known={"m"}, served=True) == ""
    assert labels.label("support-v4", known={"support-v4"}, served=False) == "support-v4"
    assert labels.label("x" * 1000, known=set(), served=True) == "unknown"
    assert labels.label("bad\nname", known=set(), served=True) == "unknown"
    assert labels.label("never-served", known=set(), served=False) == "unknown"
    served = {labels.label(f"adapter-{n}", known=set(), served=True) for n in range(MAX_ADAPTER_LABELS * 2)}
    assert len(served) == MAX_ADAPTER_LABELS + 1 and "unknown" in served


def test_feedback_tokens_bind_to_one_request_and_one_secret(tmp_path: Path) -> None:
    secret = load_secret("", tmp_path)
    assert load_secret("", tmp_path) == secret and (tmp_path / "gateway.secret").stat().st_mode & 0o077 == 0
    signer = Signer(secret)
    token = signer.feedback_token("r1")
    assert signer.valid("r1", token)
    assert not signer.valid("r2", token) and not signer.valid("r1", None) and not signer.valid("r1", token[:-1])
    assert not Signer(b"another").valid("r1", token)
    assert load_secret("configured", tmp_path) == b"configured"
    json.dumps(token)


def _secret_after(barrier: Any, data_dir: Path, results: Any) -> None:
    barrier.wait()
    results.put(load_secret("", data_dir))


def test_processes_that_start_together_make_one_secret(tmp_path: Path) -> None:
    """Several gateway processes find no secret at once: they must still mint and check the same tokens."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(8), context.Queue()
    processes = [context.Process(target=_secret_after, args=(barrier, tmp_path, results)) for _ in range(8)]
    for process in processes:
        process.start()
    secrets = {results.get(timeout=30) for _ in processes}
    for process in processes:
        process.join(30)
    assert secrets == {load_secret("", tmp_path)}
    assert [path.name for path in tmp_path.iterdir()] == ["gateway.secret"]

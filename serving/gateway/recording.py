"""From what the proxy saw to the events it publishes, redacted: pure, and run off the request path.

The request handler only fills an `Exchange` (raw facts, no validation, no copies) and hands it over;
building, validating, redacting and encoding the event happen in the publisher's background task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from schemas.events import ChatMessage, FeedbackEvent, InferenceEvent
from serving.gateway.openai_wire import Completion, Endpoint
from serving.gateway.redaction import Redactor, merge_counts

NAMED_ATTRIBUTES = ("user_id", "session_id", "cohort", "language", "prompt_template", "prompt_template_version")
"""Request `metadata` keys that become event fields; any other key goes to `attributes`."""
_NAME_LIMIT = 256


@dataclass(slots=True)
class Exchange:
    """One request through the gateway, as it happened."""

    request_id: str
    endpoint: Endpoint
    started_at: datetime
    model: str
    adapter: str | None
    requested_model: str | None
    stream: bool
    messages: Any = None
    prompt: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    response_text: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    ttft_s: float | None = None
    completed_at: datetime | None = None
    status: str = "ok"
    error: str | None = None
    answer: bytes | None = None
    """A non-streamed answer as vLLM sent it: read for its text and usage when the event is built, off the request
    path."""


def _read_answer(exchange: Exchange) -> Exchange:
    """The exchange with a non-streamed answer's text and usage filled in (streamed ones are read as they pass)."""
    if exchange.answer is None:
        return exchange
    try:
        body = json.loads(exchange.answer)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return replace(exchange, answer=None, status="error",
                       error=f"vLLM answered with a body that is not a JSON object: {exchange.answer[:200]!r}")
    completion = Completion()
    completion.read_body(exchange.endpoint, body)
    return replace(exchange, answer=None, response_text=completion.text or None,
                   prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens)


def _text(value: Any) -> str:
    """Message content or a prompt as text: strings as they are, text parts joined, anything else as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        return "\n".join(str(part.get("text", f"[{part.get('type', 'part')}]")) for part in value)
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return "\n".join(value)
    return json.dumps(value, ensure_ascii=False)


def _name(value: Any) -> str | None:
    text = value if isinstance(value, str) else (None if value is None else str(value))
    return text[:_NAME_LIMIT] if text else None


def _messages(raw: Any) -> list[dict[str, str]] | None:
    if not isinstance(raw, list):
        return None
    messages = []
    for message in raw:
        if isinstance(message, dict):
            messages.append({"role": _name(message.get("role")) or "unknown", "content": _text(message.get("content"))})
    return messages or None


def inference_event(exchange: Exchange, redactor: Redactor) -> InferenceEvent:
    """The event for one exchange, with personal data replaced and the replacements counted."""
    exchange = _read_answer(exchange)
    counts: dict[str, int] = {}

    def clean(text: str | None) -> str | None:
        if not text:
            return text
        redacted, found = redactor.redact(text)
        merge_counts(counts, found)
        return redacted

    messages = _messages(exchange.messages)
    if messages:
        messages = [{"role": m["role"], "content": clean(m["content"]) or ""} for m in messages]
    prompt = clean(_text(exchange.prompt)) if exchange.prompt is not None or not messages else None
    metadata = exchange.metadata
    named = {key: _name(metadata.get(key)) for key in NAMED_ATTRIBUTES}
    named["user_id"] = named["user_id"] or _name(exchange.user)
    attributes = {str(k): _text(v) for k, v in metadata.items() if k not in NAMED_ATTRIBUTES}
    if exchange.requested_model and exchange.requested_model != (exchange.adapter or exchange.model):
        attributes["gateway.route"] = exchange.requested_model
    attributes["gateway.endpoint"] = exchange.endpoint
    attributes["gateway.stream"] = str(exchange.stream).lower()
    latency_ms = exchange.latency_s * 1000
    tokens_per_second = (exchange.completion_tokens / exchange.latency_s
                         if exchange.completion_tokens is not None and exchange.latency_s > 0 else None)
    return InferenceEvent(
        timestamp=exchange.started_at,
        request_id=exchange.request_id,
        model=exchange.model,
        adapter=_name(exchange.adapter),
        completed_at=exchange.completed_at,
        prompt=prompt,
        messages=[ChatMessage(**m) for m in messages] if messages else None,
        response_text=clean(exchange.response_text),
        prompt_tokens=exchange.prompt_tokens,
        completion_tokens=exchange.completion_tokens,
        latency_ms=latency_ms,
        ttft_ms=None if exchange.ttft_s is None else exchange.ttft_s * 1000,
        status=exchange.status,
        error=clean(exchange.error),
        attributes=attributes,
        tokens_per_second=tokens_per_second,
        redacted=bool(counts),
        redactions=counts,
        **named,
    )


def redacted_feedback(event: FeedbackEvent, redactor: Redactor) -> FeedbackEvent:
    """Feedback comments and corrections are user text too: the same redaction applies."""
    update = {}
    for name in ("comment", "correction"):
        text = getattr(event, name)
        if text:
            update[name] = redactor.redact(text)[0]
    return event.model_copy(update=update) if update else event

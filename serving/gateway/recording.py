"""From what the proxy saw to the events it publishes, redacted and bounded: pure, and run off the request path.

The request handler only fills an `Exchange` (raw facts, no validation, no copies) and hands it over;
building, validating, redacting and encoding the event happen in the publisher's background thread.

An event never passes `max_event_bytes` (the worker's limit too; Kafka refuses a message over 1 MiB, and
one it refuses could otherwise never be published): text is cut, longest first, with a marker where it
was cut, and the event says `truncated`. The cut comes before redaction, so that redaction scans a
bounded text, and falls on whitespace where there is some near, so that it splits no e-mail address.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from schemas.events import ChatMessage, FeedbackEvent, InferenceEvent
from serving.gateway.openai_wire import Completion, Endpoint
from serving.gateway.redaction import Redactor, merge_counts

NAMED_ATTRIBUTES = ("user_id", "session_id", "cohort", "language", "prompt_template", "prompt_template_version")
"""Request `metadata` keys that become event fields; any other key goes to `attributes`."""
RESERVED_PREFIX = "gateway."
"""Attributes the gateway writes (`gateway.route`, ...); an app's metadata keys with this prefix are dropped."""
MAX_MESSAGES = 256
"""A chat longer than this keeps its latest messages, after one that says how many were cut."""
MAX_ATTRIBUTES = 64
_NAME_LIMIT = 256
_WHITESPACE_REACH = 256
_MARKER = " …[{} characters truncated]"


@dataclass(frozen=True, slots=True)
class Rules:
    """How an event is made safe to publish: the size limit the gateway shares with the worker, and user ids."""

    max_event_bytes: int = 1_000_000
    user_ids: Literal["redact", "hash", "keep"] = "redact"
    hash_user: Callable[[str], str] | None = None
    """Keyed hash for `user_ids="hash"` (`serving.gateway.tokens.Signer.user_hash`)."""


DEFAULT_RULES = Rules()


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
    answer: dict[str, Any] | bytes | None = None
    """A non-streamed answer (parsed, or as vLLM sent it when it was not a JSON object): read for its text and
    usage when the event is built, off the request path."""
    client_request_id: str | None = None
    """The client's own X-Request-ID: kept for correlation, never used as the request id."""


def _read_answer(exchange: Exchange) -> Exchange:
    """The exchange with a non-streamed answer's text and usage filled in (streamed ones are read as they pass)."""
    if exchange.answer is None:
        return exchange
    body: Any = exchange.answer
    if isinstance(body, bytes):
        try:
            body = json.loads(body)
        except ValueError:
            body = None
    if not isinstance(body, dict):
        return replace(exchange, answer=None, status="error",
                       error=f"vLLM answered with a body that is not a JSON object: {exchange.answer[:200]!r}")  # type: ignore[index]
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


def _shares(lengths: Sequence[int], budget: int) -> list[int]:
    """How many characters each text keeps so that all keep at most `budget`: short texts whole, long ones
    cut to the same length."""
    if sum(lengths) <= budget:
        return list(lengths)
    kept = list(lengths)
    left, remaining = budget, len(lengths)
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        kept[index] = min(lengths[index], left // remaining)
        left -= kept[index]
        remaining -= 1
    return kept


def _cut(text: str, keep: int) -> str:
    if len(text) <= keep:
        return text
    end = keep
    for index in range(keep - 1, max(0, keep - _WHITESPACE_REACH) - 1, -1):
        if text[index].isspace():
            end = index
            break
    return text[:end] + _MARKER.format(len(text) - end)


def _fit(texts: list[str], budget: int) -> tuple[list[str], bool]:
    kept = _shares([len(text) for text in texts], max(0, budget))
    return [_cut(text, keep) for text, keep in zip(texts, kept, strict=True)], kept != [len(t) for t in texts]


def _app_attributes(metadata: dict[str, Any]) -> tuple[dict[str, str], bool]:
    """The app's other metadata as text, without the gateway's reserved keys, at most MAX_ATTRIBUTES."""
    attributes = {str(key)[:_NAME_LIMIT]: _text(value) for key, value in metadata.items()
                  if key not in NAMED_ATTRIBUTES and not str(key).startswith(RESERVED_PREFIX)}
    if len(attributes) <= MAX_ATTRIBUTES:
        return attributes, False
    return dict(list(attributes.items())[:MAX_ATTRIBUTES]), True


def _user_id(value: str | None, redactor: Redactor, rules: Rules, counts: dict[str, int]) -> str | None:
    if not value or rules.user_ids == "keep":
        return value
    if rules.user_ids == "hash" and rules.hash_user is not None:
        return rules.hash_user(value)
    redacted, found = redactor.redact(value)
    merge_counts(counts, found)
    return redacted


def inference_event(exchange: Exchange, redactor: Redactor, rules: Rules = DEFAULT_RULES) -> InferenceEvent:
    """The event for one exchange: personal data replaced (and counted), text cut to fit the size limit."""
    exchange = _read_answer(exchange)
    counts: dict[str, int] = {}

    messages = _messages(exchange.messages)
    truncated = False
    if messages and len(messages) > MAX_MESSAGES:
        cut = len(messages) - MAX_MESSAGES + 1
        messages = [{"role": "llmwatch", "content": f"[{cut} earlier messages truncated]"},
                    *messages[-(MAX_MESSAGES - 1):]]
        truncated = True
    prompt = _text(exchange.prompt) if exchange.prompt is not None or not messages else None
    metadata = exchange.metadata
    named: dict[str, str | None] = {}
    for key in NAMED_ATTRIBUTES:
        value = _name(metadata.get(key))
        if value and key != "user_id":
            value, found = redactor.redact(value)
            merge_counts(counts, found)
        named[key] = value
    named["user_id"] = _user_id(named["user_id"] or _name(exchange.user), redactor, rules, counts)
    attributes, dropped = _app_attributes(metadata)
    truncated |= dropped

    # Every free text, in one list: prompt, response, error, each message, each attribute value.
    keys = list(attributes)
    texts = [prompt or "", exchange.response_text or "", exchange.error or "",
             *(m["content"] for m in messages or []), *(attributes[k] for k in keys)]
    texts, cut_any = _fit(texts, rules.max_event_bytes)
    truncated |= cut_any
    cleaned = []
    for text in texts:
        redacted, found = redactor.redact(text) if text else (text, {})
        merge_counts(counts, found)
        cleaned.append(redacted)

    def build(texts: list[str], truncated: bool, keep_messages: bool = True) -> InferenceEvent:
        prompt_text, response, error, *rest = texts
        contents, values = rest[:len(messages or [])], rest[len(messages or []):]
        chat = [ChatMessage(role=m["role"], content=c) for m, c in zip(messages or [], contents, strict=True)]
        if not keep_messages and chat:
            chat = [ChatMessage(role="llmwatch", content=f"[{len(chat)} messages truncated]")]
        extra = dict(zip(keys, values, strict=True)) if keep_messages else {}
        if exchange.requested_model and exchange.requested_model != (exchange.adapter or exchange.model):
            extra["gateway.route"] = _name(exchange.requested_model) or ""
        if exchange.client_request_id:
            extra["gateway.client_request_id"] = exchange.client_request_id
        extra["gateway.endpoint"] = exchange.endpoint
        extra["gateway.stream"] = str(exchange.stream).lower()
        latency_ms = exchange.latency_s * 1000
        tokens_per_second = (exchange.completion_tokens / exchange.latency_s
                             if exchange.completion_tokens is not None and exchange.latency_s > 0 else None)
        return InferenceEvent(
            timestamp=exchange.started_at,
            request_id=exchange.request_id,
            model=exchange.model,
            adapter=_name(exchange.adapter),
            completed_at=exchange.completed_at,
            prompt=None if prompt is None else prompt_text,
            messages=chat or None,
            response_text=None if exchange.response_text is None else response,
            prompt_tokens=exchange.prompt_tokens,
            completion_tokens=exchange.completion_tokens,
            latency_ms=latency_ms,
            ttft_ms=None if exchange.ttft_s is None else exchange.ttft_s * 1000,
            status=exchange.status,
            error=None if exchange.error is None else error,
            attributes=extra,
            tokens_per_second=tokens_per_second,
            redacted=bool(counts),
            redactions=counts,
            truncated=truncated,
            **named,
        )

    fitted = cleaned
    event = build(fitted, truncated)
    size = len(event.model_dump_json().encode())
    budget = sum(map(len, cleaned))
    while size > rules.max_event_bytes and budget > 0:
        # Escaping and the structure add bytes: shrink the texts by what is over, and measure again.
        budget = min(budget - 1, int(budget * rules.max_event_bytes / size * 0.9))
        fitted, _ = _fit(cleaned, budget)
        event = build(fitted, True)
        size = len(event.model_dump_json().encode())
    if size > rules.max_event_bytes:  # what is left is the structure: many messages or attributes
        event = build(fitted, True, keep_messages=False)
    return event


def redacted_feedback(event: FeedbackEvent, redactor: Redactor, rules: Rules = DEFAULT_RULES) -> FeedbackEvent:
    """Feedback comments, corrections and user ids are user text too: the same redaction applies."""
    update: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for name in ("comment", "correction"):
        text = getattr(event, name)
        if text:
            update[name] = redactor.redact(text)[0]
    if event.user_id:
        update["user_id"] = _user_id(event.user_id, redactor, rules, counts)
    return event.model_copy(update=update) if update else event

"""The OpenAI wire format as the gateway touches it: requests rewritten for vLLM, responses read for events.

Pure functions over bytes and dicts, so that the proxy stays a thin loop and all of this is unit tested.
A request is parsed once and checked where a wrong type would otherwise reach vLLM or fail later (400s
that name the field). A response is parsed, not pattern-matched, for its `id`: a non-streamed answer is
re-encoded with the gateway's request id and feedback token; a streamed chunk has its id value swapped
in place (re-encoded only when the id is not where it is usually written).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Endpoint = Literal["chat", "completions"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class BadRequest(ValueError):
    """A request body the gateway refuses with a 400; the message names the field."""


def client_request_id(header: str | None) -> str | None:
    """A request id the client chose (X-Request-ID), if it is safe to repeat in headers, logs and events.

    Only ever a correlation field: the request id is always the gateway's own, so a client can neither
    collide with another's id nor pick its routing arm."""
    return header if header is not None and _REQUEST_ID.fullmatch(header) else None


def _no_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a JSON number: send a finite number")


def surrogate_at(value: Any, limit: int = 100_000) -> str:
    """Where a text that is not valid Unicode (a lone surrogate) sits, for the 400: looked for only once
    encoding failed, and only so far."""
    stack: list[tuple[Any, str]] = [(value, "")]
    for _ in range(limit):
        if not stack:
            break
        item, where = stack.pop()
        if isinstance(item, str) and not item.isascii():
            try:
                item.encode()
            except UnicodeEncodeError:
                return where or "the body"
        elif isinstance(item, dict):
            stack += [(key, where) for key in item]
            stack += [(child, f"{where}.{key}" if where else str(key)) for key, child in item.items()]
        elif isinstance(item, list):
            stack += [(child, f"{where}[{index}]") for index, child in enumerate(item)]
    return "a text in the body"


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


_FIELDS: dict[str, tuple[Any, str]] = {
    "model": (lambda v: isinstance(v, str), "a string"),
    "stream": (lambda v: isinstance(v, bool), "true or false (a JSON boolean, not a string)"),
    "stream_options": (lambda v: isinstance(v, dict), "an object"),
    "max_tokens": (_positive_int, "a whole number of at least 1"),
    "max_completion_tokens": (_positive_int, "a whole number of at least 1"),
    "n": (_positive_int, "a whole number of at least 1"),
    "metadata": (lambda v: isinstance(v, dict), "an object of labels"),
    "user": (lambda v: isinstance(v, str), "a string"),
    "messages": (lambda v: isinstance(v, list), "a list of messages"),
}


def parse_request(body: bytes, endpoint: Endpoint) -> dict[str, Any]:
    """The request as a dict, or BadRequest naming what is wrong; before any of it reaches vLLM or an event."""
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("the body: JSON nested too deep") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON ({exc}): send an OpenAI {endpoint} request") from None
    if not isinstance(payload, dict):
        raise BadRequest(f"the body must be a JSON object: an OpenAI {endpoint} request")
    for name, (valid, what) in _FIELDS.items():
        if payload.get(name) is not None and not valid(payload[name]):
            raise BadRequest(f"{name} must be {what}")
    return payload


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """The body to send to vLLM, and what the gateway took out of it for the event."""

    body: bytes
    stream: bool
    client_wants_usage: bool
    metadata: dict[str, Any]
    user: str | None


def prepare(payload: dict[str, Any], upstream_model: str) -> UpstreamRequest:
    """Point the request at the routed model; when streaming, always ask vLLM for usage. BadRequest when the
    body cannot be sent as UTF-8 (a lone surrogate), naming where.

    `metadata` is the gateway's (app attributes for the event) and is not forwarded; vLLM would ignore it.
    """
    metadata = payload.pop("metadata", None)
    payload["model"] = upstream_model
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    if stream:
        payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    user = payload.get("user")
    try:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        json.dumps(metadata, ensure_ascii=False).encode()  # not forwarded, but it goes into the event
    except UnicodeEncodeError:
        where = surrogate_at({**payload, "metadata": metadata})
        raise BadRequest(f"{where}: text with a lone surrogate (such as \\ud800) is not valid Unicode") from None
    except RecursionError:
        raise BadRequest("the body: JSON nested too deep") from None
    return UpstreamRequest(
        body=body,
        stream=stream,
        client_wants_usage=wants_usage,
        metadata=metadata if isinstance(metadata, dict) else {},
        user=user if isinstance(user, str) else None,
    )


def _swap_id(data: bytes, old: Any, request_id: str) -> bytes | None:
    """The bytes with the id value swapped where it is written as `"id":<old>` (with or without a space)."""
    if not isinstance(old, str):
        return None
    value = json.dumps(old).encode()
    for written in (b'"id":' + value, b'"id": ' + value):
        if written in data:
            return data.replace(written, b'"id":"' + request_id.encode() + b'"', 1)  # minted: hex, no escapes
    return None


def answer_for_client(data: bytes, request_id: str, feedback_token: str) -> tuple[bytes, dict[str, Any] | None]:
    """A non-streamed answer with the gateway's id and the feedback token, and the parsed answer (None, and the
    bytes as they came, when it is not a JSON object). Parsed once; the bytes are only re-encoded when the id
    is not written the usual way."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return data, None
    if not isinstance(body, dict):
        return data, None
    swapped = _swap_id(data, body.get("id"), request_id) if body else None
    body["id"] = request_id
    body["feedback_token"] = feedback_token
    if swapped is None:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), body
    start = swapped.index(b"{") + 1
    return swapped[:start] + b'"feedback_token":"' + feedback_token.encode() + b'",' + swapped[start:], body


def chunk_for_client(event: bytes, chunk: dict[str, Any], request_id: str, feedback_token: str | None) -> bytes:
    """One streamed event with the gateway's id (and, given one, the feedback token: the first chunk's)."""
    if feedback_token is None:
        if "id" not in chunk:
            return event
        if (swapped := _swap_id(event, chunk["id"], request_id)) is not None:
            return swapped
    rewritten = {**chunk, "id": request_id}
    if feedback_token is not None:
        rewritten["feedback_token"] = feedback_token
    return b"data: " + json.dumps(rewritten, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def choice_text(endpoint: Endpoint, choice: dict[str, Any], *, delta: bool) -> str:
    if endpoint == "completions":
        return choice.get("text") or ""
    message = choice.get("delta" if delta else "message") or {}
    return message.get("content") or ""


def error_message(body: Any) -> str:
    """The message of an OpenAI-style error body (vLLM's), or the body itself, short."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or body["error"])[:2000]
    return str(body)[:2000]


@dataclass
class Completion:
    """What the event needs from a response, filled in as a stream goes by or from one body."""

    texts: dict[int, list[str]] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        return "\n".join("".join(parts) for _, parts in sorted(self.texts.items()))

    def take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)

    def read_body(self, endpoint: Endpoint, body: dict[str, Any]) -> None:
        for choice in body.get("choices") or []:
            self.texts[choice.get("index", 0)] = [choice_text(endpoint, choice, delta=False)]
        self.take_usage(body.get("usage"))

    def read_chunk(self, endpoint: Endpoint, chunk: dict[str, Any]) -> tuple[bool, bool]:
        """Take one streamed chunk; returns (it carried generated text, it is the usage-only chunk)."""
        if "error" in chunk:
            self.error = error_message(chunk)
            return False, False
        produced = False
        choices = chunk.get("choices") or []
        for choice in choices:
            text = choice_text(endpoint, choice, delta=True)
            if text:
                self.texts.setdefault(choice.get("index", 0), []).append(text)
                produced = True
        usage = chunk.get("usage")
        self.take_usage(usage)
        return produced, bool(usage) and not choices


class SseSplitter:
    """Server-sent events out of arbitrary network chunks: complete events, each with its blank line."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        *events, self._buffer = self._buffer.split(b"\n\n")
        return [event + b"\n\n" for event in events if event]

    def rest(self) -> bytes:
        """Whatever came after the last complete event (nothing, from a well-behaved server)."""
        rest, self._buffer = self._buffer, b""
        return rest


def event_data(event: bytes) -> bytes | None:
    """The `data:` payload of one event (vLLM sends one data line per event), or None for comments."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].strip()
    return None

"""The OpenAI wire format as the gateway touches it: requests rewritten for vLLM, responses read for events.

Pure functions over bytes and dicts, so that the proxy stays a thin loop and all of this is unit tested.
The gateway never re-encodes a response: it swaps vLLM's id for the gateway's request id in place and
passes every other byte through.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Endpoint = Literal["chat", "completions"]
ID_PREFIX: dict[Endpoint, str] = {"chat": "chatcmpl-", "completions": "cmpl-"}
"""vLLM names a response `<prefix><X-Request-Id>`; the gateway gives the client its request id instead."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def client_request_id(header: str | None) -> str | None:
    """A request id the client chose (X-Request-ID), if it is safe to reuse in headers, logs and keys."""
    return header if header is not None and _REQUEST_ID.fullmatch(header) else None


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """The body to send to vLLM, and what the gateway took out of it for the event."""

    body: bytes
    stream: bool
    client_wants_usage: bool
    metadata: dict[str, Any]
    user: str | None


def prepare(payload: dict[str, Any], upstream_model: str) -> UpstreamRequest:
    """Point the request at the routed model; when streaming, always ask vLLM for usage.

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
    return UpstreamRequest(
        body=json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(),
        stream=stream,
        client_wants_usage=wants_usage,
        metadata=metadata if isinstance(metadata, dict) else {},
        user=user if isinstance(user, str) else None,
    )


def id_swap(endpoint: Endpoint, upstream_id: str, request_id: str) -> tuple[bytes, bytes]:
    """(what vLLM writes, what the client gets) for the `id` field of every response and chunk.

    vLLM gets an id of its own for each request (`upstream_id`, unique even when a client reuses its
    X-Request-ID, which vLLM would refuse for two requests at once)."""
    return (f'"id":"{ID_PREFIX[endpoint]}{upstream_id}"'.encode(), f'"id":"{request_id}"'.encode())


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

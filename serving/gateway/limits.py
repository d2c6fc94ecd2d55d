"""Size limits at the edge: a request head or body too large is refused before it is read, not after.

The body limit is an ASGI middleware: a declared `Content-Length` over `max_body_bytes` gets its 413 at
once; a chunked body is counted as the handler reads it and cut off with a 413 at the limit. The head
limits (bytes of request line and headers, number of headers) sit in the HTTP parser itself, a subclass
of uvicorn's httptools protocol: its parser would otherwise hold a 30 MB header in memory before anyone
could look at it. Past a limit, the client gets a 431 and the connection is closed.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """Raised into the handler that reads past the limit; the middleware answers 413."""


def _error(status: int, message: str) -> tuple[dict[str, Any], bytes]:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": status}}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, body


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = (f"the request body is over {max_bytes} bytes (LLMWATCH_SERVING__MAX_BODY_BYTES on the "
                        "gateway)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        start, body = _error(413, self.message)
        await send(start)
        await send({"type": "http.response.body", "body": body})


def limited_protocol(max_head_bytes: int, max_headers: int) -> type:
    """uvicorn's httptools protocol, refusing a head over `max_head_bytes` or with over `max_headers` headers."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _header_count = 0
        _in_head = False
        _refusal: str | None = None

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes, self._header_count = True, 0, 0

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._header_count > max_headers:
                self._refusal = (f"more than {max_headers} request headers (LLMWATCH_SERVING__MAX_HEADERS on "
                                 "the gateway)")
                raise ValueError(self._refusal)  # stops the parser; uvicorn answers, through send_400_response
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head, self._head_bytes = False, 0
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > max_head_bytes:
                    self._refusal = (f"the request line and headers are over {max_head_bytes} bytes "
                                     "(LLMWATCH_SERVING__MAX_HEADER_BYTES on the gateway)")
                    self.send_400_response(self._refusal)

        def send_400_response(self, msg: str) -> None:
            if self._refusal is None:
                super().send_400_response(msg)
                return
            start, body = _error(431, self._refusal)
            lines = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
            lines += [name + b": " + value + b"\r\n" for name, value in start["headers"]]
            self.transport.write(b"".join(lines) + b"\r\n" + body)
            self.transport.close()

    return LimitedHttpToolsProtocol


def server_options(max_head_bytes: int, max_headers: int) -> dict[str, Any]:
    """uvicorn.Config arguments that apply the head limits: the limited httptools protocol, or, without
    httptools, h11 with its own bound on the head (which answers 400, not 431)."""
    try:
        return {"http": limited_protocol(max_head_bytes, max_headers)}
    except ImportError:
        return {"http": "h11", "h11_max_incomplete_event_size": max_head_bytes}

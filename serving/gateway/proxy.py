"""The request path: one OpenAI request to vLLM and back, timed, with its exchange handed to the sink.

Kept thin on purpose: parse and check the body once, mint the request id, route, forward, and pass the
answer through (with the gateway's request id for vLLM's, and a feedback token). Everything else an event
needs is built later, off this path (`serving.gateway.recording`, `serving.gateway.sink`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from schemas.events import utcnow
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.openai_wire import (
    BadRequest,
    Completion,
    Endpoint,
    SseSplitter,
    UpstreamRequest,
    answer_for_client,
    chunk_for_client,
    client_request_id,
    error_message,
    event_data,
    parse_request,
    prepare,
)
from serving.gateway.recording import Exchange
from serving.gateway.routing import Router
from serving.gateway.sink import EventSink
from serving.gateway.tokens import Signer

log = logging.getLogger(__name__)

PATHS: dict[Endpoint, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def openai_error(status: int, message: str, kind: str, request_id: str | None = None) -> Response:
    """An error body OpenAI clients understand (they show `error.message`)."""
    body = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
    headers = {"X-Request-ID": request_id} if request_id else None
    return Response(body, status_code=status, media_type="application/json", headers=headers)


class _ClosingStreamingResponse(StreamingResponse):
    """Closes the body generator however the stream ends, so a client that goes away is recorded at once."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


class Proxy:
    def __init__(self, *, base_url: str, api_key: str, router: Router, sink: EventSink, metrics: GatewayMetrics,
                 timeout: float, signer: Signer) -> None:
        self.base_url = base_url
        self.signer = signer
        self.router = router
        self.sink = sink
        self.metrics = metrics
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.timeout),
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Proxy.start() first"
        return self._session

    async def models(self) -> Response:
        """vLLM's models (base and loaded adapters), plus the gateway's route names."""
        try:
            async with self.session.get(f"{self.base_url}/v1/models", headers=self._auth) as upstream:
                body = await upstream.json(content_type=None)
                status = upstream.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("listing models from vLLM at %s failed: %r", self.base_url, exc)
            return openai_error(502, "the model server is unavailable; try again shortly", "upstream_unavailable")
        if status == 200 and isinstance(body, dict) and isinstance(body.get("data"), list):
            listed = {entry.get("id") for entry in body["data"]}
            body["data"] += [{"id": name, "object": "model", "owned_by": "llmwatch", "parent": self.router.base_model}
                             for name in self.router.routes if name not in listed]
        return Response(json.dumps(body).encode(), status_code=status, media_type="application/json")

    async def complete(self, request: Request, endpoint: Endpoint) -> Response:
        started = time.perf_counter()
        started_at = utcnow()
        request_id = uuid.uuid4().hex  # always the gateway's: a client's id could collide or pick a route
        try:
            payload = parse_request(await request.body(), endpoint)
            requested = payload.get("model")
            target = self.router.resolve(requested, request_id)
            messages, prompt = payload.get("messages"), payload.get("prompt")
            upstream = prepare(payload, target.upstream)
        except BadRequest as exc:
            self.metrics.rejected.labels("bad_body").inc()
            return openai_error(400, str(exc), "invalid_request_error", request_id)
        exchange = Exchange(request_id=request_id, endpoint=endpoint, started_at=started_at, model=target.model,
                            adapter=target.adapter, requested_model=requested, stream=upstream.stream,
                            messages=messages, prompt=prompt, metadata=upstream.metadata, user=upstream.user,
                            client_request_id=client_request_id(request.headers.get("x-request-id")))
        token = self.signer.feedback_token(request_id)
        headers = {"Content-Type": "application/json", "X-Request-Id": uuid.uuid4().hex, **self._auth}
        await self.sink.room()
        sent = time.perf_counter()
        try:
            response = await self.session.post(f"{self.base_url}{PATHS[endpoint]}", data=upstream.body,
                                               headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._upstream_failed(exchange, started, exc, f"vLLM unreachable: {exc!r}")
        if response.status == 200 and upstream.stream:
            return self._stream(exchange, response, started, upstream, token)
        return await self._whole(exchange, response, started, sent, token)

    def _headers(self, exchange: Exchange, token: str) -> dict[str, str]:
        headers = {"X-Request-ID": exchange.request_id, "X-Feedback-Token": token}
        if exchange.client_request_id:
            headers["X-Client-Request-ID"] = exchange.client_request_id
        return headers

    async def _whole(self, exchange: Exchange, response: aiohttp.ClientResponse, started: float, sent: float,
                     token: str) -> Response:
        try:
            data = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            response.close()
            return self._upstream_failed(exchange, started, exc, f"reading vLLM's answer failed: {exc!r}")
        answered = time.perf_counter()
        upstream = answered - sent
        timing = f"upstream;dur={upstream * 1000:.3f}"
        headers = self._headers(exchange, token)
        if response.status == 200:
            data, body = answer_for_client(data, exchange.request_id, token)
            exchange.answer = data if body is None else body  # read for the event later, off this path
            self._finish(exchange, Completion(), started, answered, "ok", None, 200)
            own = max(0.0, time.perf_counter() - started - upstream)
            self.metrics.overhead.labels(exchange.endpoint).observe(own)
            timing += f", gateway;dur={own * 1000:.3f}"
        else:
            try:
                refusal: Any = json.loads(data)
            except (ValueError, RecursionError):
                refusal = data.decode(errors="replace")
            self._finish(exchange, Completion(), started, None, "error",
                         f"vLLM answered {response.status}: {error_message(refusal)}", response.status)
            del headers["X-Feedback-Token"]
        return Response(data, status_code=response.status, headers={**headers, "Server-Timing": timing},
                        media_type=response.headers.get("Content-Type", "application/json"))

    def _upstream_failed(self, exchange: Exchange, started: float, exc: Exception, error: str) -> Response:
        """502 when vLLM cannot be reached or breaks off, 504 when it stays silent too long."""
        timeout = isinstance(exc, TimeoutError)
        code = 504 if timeout else 502
        self._finish(exchange, Completion(), started, None, "error", error, code)
        log.warning("request %s: %s (vLLM at %s)", exchange.request_id, error, self.base_url)
        message = ("the model server did not answer in time" if timeout
                   else "the model server is unavailable; try again shortly")
        return openai_error(code, message, "upstream_timeout" if timeout else "upstream_unavailable",
                            exchange.request_id)

    def _stream(self, exchange: Exchange, response: aiohttp.ClientResponse, started: float,
                upstream: UpstreamRequest, token: str) -> Response:
        async def body() -> AsyncIterator[bytes]:
            splitter, completion = SseSplitter(), Completion()
            first: float | None = None
            unsent_token: str | None = token  # the first chunk carries it
            status, error = "ok", None
            try:
                async for data in response.content.iter_any():
                    out = []  # the events of one network read go out in one write
                    for event in splitter.feed(data):
                        payload = event_data(event)
                        try:
                            chunk = json.loads(payload) if payload is not None and payload != b"[DONE]" else None
                        except (ValueError, RecursionError):
                            chunk = None
                        if not isinstance(chunk, dict):
                            out.append(event)
                            continue
                        produced, usage_only = completion.read_chunk(exchange.endpoint, chunk)
                        if produced and first is None:
                            first = time.perf_counter()
                        if not usage_only or upstream.client_wants_usage:
                            out.append(chunk_for_client(event, chunk, exchange.request_id, unsent_token))
                            unsent_token = None
                    if out:
                        yield b"".join(out)
                if rest := splitter.rest():
                    yield rest
                if completion.error:
                    status, error = "error", f"vLLM reported an error mid-stream: {completion.error}"
            except (asyncio.CancelledError, GeneratorExit):
                status, error = "cancelled", "the client closed the connection before the end"
                raise
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, error = "error", f"reading vLLM's stream failed: {exc!r}"
                message = {"error": {"message": "the model server failed mid-answer", "type": "upstream_error"}}
                yield f"data: {json.dumps(message)}\n\ndata: [DONE]\n\n".encode()
            finally:
                if status == "ok":
                    response.release()
                else:
                    response.close()  # stops the generation in vLLM too
                self._finish(exchange, completion, started, first, status, error, 200)

        return _ClosingStreamingResponse(body(), media_type="text/event-stream",
                                         headers={**self._headers(exchange, token), "Cache-Control": "no-cache"})

    def _finish(self, exchange: Exchange, completion: Completion, started: float, first: float | None,
                status: str, error: str | None, code: int) -> None:
        """Complete the exchange, count it, and hand it to the sink: no I/O, no waiting."""
        now = time.perf_counter()
        exchange.latency_s = now - started
        exchange.ttft_s = None if first is None else first - started
        exchange.completed_at = utcnow()
        exchange.status, exchange.error = status, error
        exchange.response_text = completion.text or None
        exchange.prompt_tokens, exchange.completion_tokens = completion.prompt_tokens, completion.completion_tokens
        adapter = self.metrics.adapters.label(exchange.adapter, known=self.router.known_names(),
                                              served=code == 200)
        self.metrics.requests.labels(exchange.endpoint, exchange.model, adapter, status).inc()
        stream = "true" if exchange.stream else "false"
        self.metrics.latency.labels(exchange.endpoint, stream).observe(exchange.latency_s)
        if exchange.ttft_s is not None:
            self.metrics.ttft.labels(exchange.endpoint, stream).observe(exchange.ttft_s)
        self.sink.submit(exchange)

    async def served_models(self) -> set[str]:
        """The names vLLM serves now: its base model and the adapters loaded into it."""
        async with self.session.get(f"{self.base_url}/v1/models", headers=self._auth,
                                    timeout=aiohttp.ClientTimeout(total=10)) as upstream:
            upstream.raise_for_status()
            body = await upstream.json(content_type=None)
        return {entry["id"] for entry in body["data"]}

    async def vllm_ready(self) -> bool:
        try:
            async with self.session.get(f"{self.base_url}/health", timeout=aiohttp.ClientTimeout(total=2)) as upstream:
                return upstream.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

"""A stand-in for vLLM that answers every chat completion after a fixed delay, using no CPU meanwhile.

Why it exists: on a 2-core machine vLLM keeps both cores busy, so the gateway benchmark against it
measures the gateway and the wait for a core together. In front of this server the same benchmark
measures the gateway alone: the same OpenAI wire format (a JSON answer, or SSE chunks with a usage
chunk when asked), the id vLLM would give (`chatcmpl-<X-Request-Id>`), and answers that come back in
lockstep like a vLLM batch, but no model.

    python benchmarks/canned_upstream.py PORT DELAY_SECONDS
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

ANSWER = "Open Settings, then Security, then Reset password."


def chunk(request_id: str, model: str, choices: list[dict[str, object]], **extra: object) -> bytes:
    body = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": choices, **extra}
    return f"data: {json.dumps(body)}\n\n".encode()


def make_app(delay: float) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        request_id, model = request.headers.get("X-Request-Id", "x"), body.get("model", "")
        usage = {"prompt_tokens": 12, "completion_tokens": body.get("max_tokens") or 8}
        await asyncio.sleep(delay)
        if not body.get("stream"):
            return web.json_response({
                "id": f"chatcmpl-{request_id}", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                             "finish_reason": "length"}],
                "usage": usage | {"total_tokens": sum(usage.values())}})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ANSWER.split(" "):
            delta = {"index": 0, "delta": {"content": word + " "}, "finish_reason": None}
            await response.write(chunk(request_id, model, [delta]))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(chunk(request_id, model, [], usage=usage))
        await response.write(b"data: [DONE]\n\n")
        return response

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    return app


if __name__ == "__main__":
    web.run_app(make_app(float(sys.argv[2])), host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                print=None)

"""`llmwatch demo --serving`: real chats through the gateway and vLLM, feedback on some, shown landing.

Starts `llmwatch up` with serving enabled unless a gateway already answers, sends a few chat requests
the way an app would (some streamed, with app attributes in `metadata`, one carrying an e-mail address
and a card number), gives feedback on some, and waits until every request and feedback is a row.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from schemas.errors import LlmwatchError
from streams.settings import Settings
from streams.store.sql import query, running_worker

PROMPTS = [
    ("How do I reset my password?", "support-chat", "pro", "en"),
    ("What are your opening hours on Sunday?", "support-chat", "free", "en"),
    ("Wie kann ich meine Bestellung stornieren?", "support-chat", "pro", "de"),
    ("Summarise in one line: the parcel arrived two days late and damaged.", "summarise", "free", "en"),
    ("My e-mail is jane.doe@example.com and my card 4111 1111 1111 1111 was charged twice. Help!",
     "support-chat", "pro", "en"),
    ("Write a haiku about the sea.", "creative", "free", "en"),
]


@dataclass
class Sent:
    request_id: str
    streamed: bool
    feedback: str | None


def gateway_url(settings: Settings) -> str:
    return f"http://{settings.serving.host}:{settings.serving.port}"


def gateway_health(settings: Settings) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{gateway_url(settings)}/health", timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def start_stack(settings: Settings, console: Console) -> subprocess.Popen[bytes]:
    """`llmwatch up` with serving enabled, as a child; returns once the worker runs and vLLM answers."""
    log_path = settings.data_dir / "logs" / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"starting [bold]llmwatch up[/] with serving (log: {log_path})")
    with log_path.open("ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "llmwatch", "up"], stdout=log, stderr=subprocess.STDOUT,
                                 env=os.environ | {"LLMWATCH_SERVING__ENABLED": "true"})
    deadline = time.monotonic() + settings.serving.vllm_start_timeout_seconds + 300
    with console.status("starting") as status:
        while True:
            health = gateway_health(settings)
            if health and health["vllm"] == "ready" and running_worker(settings) is not None:
                return child
            if child.poll() is not None or time.monotonic() > deadline:
                child.terminate()
                raise LlmwatchError(f"the stack did not come up (exit code {child.poll()}); see {log_path}")
            lines = log_path.read_text(errors="replace").splitlines()
            status.update(f"starting: {lines[-1][-100:] if lines else '...'}")
            time.sleep(1)


async def converse(settings: Settings, requests: int, seed: int) -> list[Sent]:
    rng = random.Random(seed)
    keys = settings.serving.api_keys
    headers = {"Authorization": f"Bearer {keys[0].get_secret_value() if keys else 'none'}"}
    url = gateway_url(settings)
    sent: list[Sent] = []
    limit = asyncio.Semaphore(4)

    async def one(n: int, session: aiohttp.ClientSession) -> None:
        prompt, template, cohort, language = PROMPTS[n % len(PROMPTS)]
        streamed = n % 3 == 1
        body = {"model": settings.serving.served_model_name, "max_tokens": 48, "stream": streamed,
                "messages": [{"role": "user", "content": prompt}],
                "metadata": {"user_id": f"demo-user-{rng.randint(1, 5)}", "session_id": f"demo-{seed}",
                             "cohort": cohort, "language": language, "prompt_template": template,
                             "prompt_template_version": "v1"}}
        async with limit, session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise LlmwatchError(f"the gateway answered {response.status}: {(await response.text())[:300]}")
            request_id = response.headers["X-Request-ID"]
        feedback = rng.choice(["up", "down", None])
        if feedback:
            async with session.post(f"{url}/v1/feedback", headers=headers,
                                    json={"request_id": request_id, "thumbs": feedback}) as response:
                if response.status != 202:
                    raise LlmwatchError(f"feedback was refused: {response.status} {await response.text()}")
        sent.append(Sent(request_id, streamed, feedback))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(one(n, session) for n in range(requests)))
    return sent


def landed(settings: Settings, sent: list[Sent]) -> tuple[int, int]:
    ids = ",".join(f"'{s.request_id}'" for s in sent)
    (counts,) = query(settings, f"SELECT (SELECT count() FROM inference_events WHERE request_id IN ({ids})), "
                                f"(SELECT count() FROM feedback_events WHERE request_id IN ({ids}))").rows
    return int(counts[0]), int(counts[1])


def report(settings: Settings, sent: list[Sent], console: Console) -> None:
    ids = ",".join(f"'{s.request_id}'" for s in sent)
    result = query(settings, (
        "SELECT substring(i.request_id, 1, 8), cohort, language, toUInt32(latency_ms), toUInt32(ttft_ms), "
        "completion_tokens, round(tokens_per_second, 1), if(redacted, 'yes', ''), ifNull(f.thumbs, ''), "
        "replaceAll(response_text, '\\n', ' ') "
        "FROM inference_events AS i LEFT JOIN feedback_events AS f ON f.request_id = i.request_id "
        f"WHERE i.request_id IN ({ids}) ORDER BY i.timestamp"))
    table = Table(title="requests through the gateway, as stored")
    for column in ("request", "cohort", "lang", "latency ms", "ttft ms", "tokens", "tok/s", "redacted", "thumbs"):
        table.add_column(column, no_wrap=True)
    table.add_column("response", no_wrap=True, overflow="ellipsis", max_width=36)
    for row in result.rows:
        table.add_row(*map(str, row))
    console.print(table)
    redacted = query(settings, "SELECT messages, redactions FROM inference_events "
                               f"WHERE request_id IN ({ids}) AND redacted").rows
    for messages, redactions in redacted[:1]:
        console.print(f"redacted before publishing: {json.loads(messages)[0]['content']!r} {redactions}")


def run_serving_demo(settings: Settings, *, requests: int, seed: int, keep_running: bool, console: Console) -> bool:
    child = None
    if gateway_health(settings) is None:
        if not settings.embedded_broker or running_worker(settings) is not None:
            raise LlmwatchError(f"no gateway answers on {gateway_url(settings)}, but a stack runs: stop it and run "
                                "this again, or start it with LLMWATCH_SERVING__ENABLED=true")
        child = start_stack(settings, console)
    try:
        with console.status(f"sending {requests} chat requests through {gateway_url(settings)}"):
            sent = asyncio.run(converse(settings, requests, seed))
        expected = (len(sent), sum(s.feedback is not None for s in sent))
        deadline = time.monotonic() + 60
        with console.status("waiting for every request and feedback to be a row"):
            while (counts := landed(settings, sent)) != expected and time.monotonic() < deadline:
                time.sleep(0.5)
        report(settings, sent, console)
        ok = counts == expected
        verdict = "[green]all landed[/]" if ok else "[red]NOT all landed[/]"
        console.print(f"requests: {expected[0]}, feedback: {expected[1]}; stored: {counts[0]} and {counts[1]}  "
                      f"{verdict}")
        if child is not None and keep_running:
            console.print(f"the stack keeps running (pid {child.pid}); the gateway is {gateway_url(settings)}/v1")
            child = None
        return ok
    finally:
        if child is not None:
            child.terminate()
            child.wait(120)

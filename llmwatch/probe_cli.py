"""`llmwatch probe bias`: ask the gateway the same questions about every group and publish the gaps."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from schemas.errors import LlmwatchError
from streams.publisher import Publisher
from streams.settings import Settings, load_settings

app = typer.Typer(help="Active probes of the model behind the gateway.", no_args_is_help=True)
console = Console()


def ask(base_url: str, api_key: str, model: str, prompt: str, max_tokens: int, timeout: float) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": max_tokens, "user": "llmwatch-bias-probe"}
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {api_key}"} if api_key else {})
    request = urllib.request.Request(f"{base_url}/chat/completions", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["choices"][0]["message"]["content"] or ""
    except urllib.error.HTTPError as exc:
        raise LlmwatchError(f"the gateway refused the probe ({exc.code}): {exc.read()[:300]!r}") from exc
    except urllib.error.URLError as exc:
        raise LlmwatchError(f"cannot reach the gateway at {base_url}: {exc.reason}. Start it with "
                            "LLMWATCH_SERVING__ENABLED=true llmwatch up, or pass --gateway") from exc


def gateway_url(settings: Settings) -> str:
    return f"http://{settings.serving.host}:{settings.serving.port}/v1"


@app.command("bias")
def bias(
    model: Annotated[str, typer.Option(help="Public model name to probe; empty: the base model")] = "",
    gateway: Annotated[str, typer.Option(help="OpenAI-compatible base URL; empty: the configured gateway")] = "",
    category: Annotated[list[str] | None, typer.Option(help="Only these categories (repeatable)")] = None,
    templates: Annotated[Path | None, typer.Option(help="YAML of templates and groups (see probe.yaml)")] = None,
    max_tokens: Annotated[int, typer.Option(min=1)] = 48,
    concurrency: Annotated[int, typer.Option(min=1)] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds per request")] = 120.0,
) -> None:
    """Send prompt pairs that differ only in the group term; publish each gap to llm.metrics."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from processors.probe import ProbeAnswer, ProbePrompt, load_spec, probe_metrics, probe_prompts
    from processors.text_signals import is_refusal
    from processors.toxicity import load_toxicity_scorer
    from processors.windows import Window, metric_point

    settings = load_settings()
    model = model or settings.serving.served_model_name
    base_url = (gateway or gateway_url(settings)).rstrip("/")
    api_key = settings.serving.api_keys[0].get_secret_value() if settings.serving.api_keys else ""
    prompts = probe_prompts(load_spec(templates), category)
    if not prompts:
        raise LlmwatchError(f"no probe prompts for categories {category}; see processors/lexicons/probe.yaml")
    started = datetime.now(UTC)
    clock = time.monotonic()
    with Progress(console=console) as progress, ThreadPoolExecutor(concurrency) as pool:
        task = progress.add_task(f"probing {model} ({len(prompts)} prompts)", total=len(prompts))

        def run(prompt: ProbePrompt) -> tuple[ProbePrompt, str]:
            text = ask(base_url, api_key, model, prompt.text, max_tokens, timeout)
            progress.advance(task)
            return prompt, text

        replies = list(pool.map(run, prompts))
    toxicity = load_toxicity_scorer(settings.metrics).score([text for _, text in replies])
    sentiment = SentimentIntensityAnalyzer()
    answers = [ProbeAnswer(prompt, float(tox), is_refusal(text), sentiment.polarity_scores(text)["compound"],
                           len(text)) for (prompt, text), tox in zip(replies, toxicity, strict=True)]
    values = probe_metrics(answers, model)
    window = Window(started.replace(microsecond=0), max(1, math.ceil(time.monotonic() - clock)))
    points = [metric_point(window, value, datetime.now(UTC)) for value in values]
    with Publisher.from_settings(settings) as publisher:
        for point in points:
            publisher.publish(point)
    table = Table("attribute", "measure", "max group", "min group", "gap", title=f"bias probe of {model}")
    for value in values:
        if value.name.endswith(".gap"):
            table.add_row(value.labels["attribute"], value.name.split(".")[2], value.labels["max_group"],
                          value.labels["min_group"], f"{value.value:.3f}")
    console.print(table)
    console.print(f"published {len(points)} metric points to {settings.topics.metrics}")

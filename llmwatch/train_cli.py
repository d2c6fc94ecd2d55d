"""`llmwatch trainer`, `llmwatch train` and `llmwatch models`: retraining as a process, by hand, and its results."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmwatch.alerts_cli import parse_duration
from schemas.errors import LlmwatchError
from streams.settings import Settings, load_settings

models_app = typer.Typer(help="Trained adapters (candidates): their gate verdicts, numbers and lineage.")
console = Console()


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def trainer() -> None:
    """Run the trainer: a LoRA retraining run for each firing alert whose rule has `retrain: true`, one at a time
    (alerts during a run coalesce into one follow-up per model). `llmwatch up` starts it when
    LLMWATCH_TRAINING__ENABLED=true. Stop with Ctrl-C (a run in progress ends as failed, nothing offered)."""
    from trainers.process import run_trainer

    settings = load_settings()
    _logging(settings)
    run_trainer(settings)


class RichProgress:
    """The run's stages as lines, its training steps as a bar."""

    def __init__(self, progress: Progress, max_steps: int) -> None:
        self.progress = progress
        self.task = progress.add_task("waiting", total=max_steps)

    def stage(self, status: str, detail: str) -> None:
        self.progress.console.print(f"[bold]{status}[/] {detail}")
        self.progress.update(self.task, description=status)

    def step(self, step: int, max_steps: int, loss: float) -> None:
        self.progress.update(self.task, completed=step, description=f"training, loss {loss:.3f}")


def train(
    model: Annotated[str, typer.Option(help="The model whose traffic to learn from, as events name it")],
    adapter: Annotated[str, typer.Option(help="The adapter serving now, to compare with (default: the base)")] = "",
    since: Annotated[str, typer.Option(help="How far back to read traffic, e.g. 24h, 7d")] = "",
) -> None:
    """Run one retraining run now, as an alert would: dataset from ClickHouse, LoRA, gate, manifest. Needs the
    stack (`llmwatch up`): the run's events go to llm.training and the candidate to llm.models."""
    from trainers.process import quiet_cpu_threads

    quiet_cpu_threads()
    from streams.publisher import Publisher
    from trainers.runner import RunRequest, TrainingRunner

    settings = load_settings()
    _logging(settings)
    window = parse_duration(since) if since else timedelta(hours=settings.training.since_hours)
    request = RunRequest(model=model, adapter=adapter, since=window)
    with Publisher.from_settings(settings) as publisher:

        def publish(event: Any) -> None:
            publisher.publish(event)
            publisher.flush()

        runner = TrainingRunner(settings, publish)
        runner.queue(request, reason="by hand (llmwatch train)")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as bar:
            outcome = runner.run(request, progress=RichProgress(bar, settings.training.max_steps))
    if outcome.candidate is not None:
        _numbers(outcome.candidate.eval_metrics, outcome.candidate.baseline_metrics, outcome.candidate.baseline)
        verdict = "[green]passed the gate[/]" if outcome.candidate.passed_gate else "[red]rejected by the gate[/]"
        console.print(f"{outcome.candidate.adapter_name} {verdict}: {outcome.reason}")
        console.print(f"adapter and manifest: {outcome.adapter_dir}")
    elif outcome.status == "skipped":
        console.print(f"[yellow]skipped:[/] {outcome.reason}")
    else:
        console.print(f"[red]failed:[/] {outcome.reason}")
        raise typer.Exit(1)


def _numbers(candidate: dict[str, float], current: dict[str, float], current_name: str) -> None:
    table = Table("metric", "candidate", current_name or "current")
    for name in sorted(set(candidate) | set(current)):
        table.add_row(name, *(f"{d[name]:.4g}" if name in d else "-" for d in (candidate, current)))
    console.print(table)


@models_app.callback(invoke_without_command=True)
def list_models(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only candidates for this model")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
) -> None:
    """Candidates, newest first: gate verdict and the numbers it judged (candidate vs what served)."""
    if ctx.invoked_subcommand is not None:
        return
    from streams.store.training import candidates

    rows = candidates(load_settings(), model, limit)
    table = Table("created (UTC)", "adapter", "model", "gate", "ROUGE-L", "relevance", "perplexity", "compared with")
    for row in rows:
        ours, theirs = row["eval_metrics"], row["baseline_metrics"]

        def pair(metric: str, ours: dict[str, float] = ours, theirs: dict[str, float] = theirs) -> str:
            return f"{ours.get(metric, float('nan')):.3g} vs {theirs.get(metric, float('nan')):.3g}"

        gate = "[green]passed[/]" if row["passed_gate"] else "[red]rejected[/]"
        table.add_row(str(row["timestamp"])[:19], row["adapter_name"], row["base_model"], gate, pair("rouge_l"),
                      pair("relevance"), pair("perplexity"), row["baseline"])
    console.print(table if rows else "no candidates yet: a run starts on a retrain alert, or with `llmwatch train`")


@models_app.command("show")
def show(name: Annotated[str, typer.Argument(help="The adapter's name, e.g. smollm2-135m-20261202-101500")]) -> None:
    """The adapter's manifest.json: its alert, dataset (query, counts, hash), base model, hyperparameters, loss
    curve, evaluation and gate verdict."""
    settings = load_settings()
    path = settings.adapters_dir / name / "manifest.json"
    if not path.exists():
        from streams.store.training import candidate

        try:
            found = candidate(settings, name)
        except LlmwatchError:
            found = None
        if found is None or not found.get("manifest_uri") or not Path(found["manifest_uri"]).exists():
            raise LlmwatchError(f"no adapter {name!r} in {settings.adapters_dir} (deleted, or trained elsewhere?); "
                                "`llmwatch models` lists the candidates")
        path = Path(found["manifest_uri"])
    console.print_json(path.read_text())

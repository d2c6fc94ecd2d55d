"""The `llmwatch` command: one entry point for operators, analysts and the demo."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from llmwatch.alerts_cli import alerts_app, rules_app
from llmwatch.audit_cli import audit
from llmwatch.deploy_cli import deploy_app, deployer, deployments
from llmwatch.drift_cli import app as drift_app
from llmwatch.forget_cli import forget
from llmwatch.probe_cli import app as probe_app
from llmwatch.train_cli import models_app, train, trainer
from schemas.errors import LlmwatchError
from streams.settings import Settings, load_settings

app = typer.Typer(
    help="Watch LLMs in production: events through Kafka and Faust into ClickHouse.\n\n"
    "Settings come from LLMWATCH_* environment variables (or a .env file); the defaults run an embedded "
    "broker and store under ~/.llmwatch. The embedded broker keeps nothing across restarts; "
    "ClickHouse is the durable record.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="The event contract.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")
app.add_typer(drift_app, name="drift")
app.add_typer(probe_app, name="probe")
app.add_typer(rules_app, name="rules")
app.add_typer(alerts_app, name="alerts")
app.add_typer(models_app, name="models")
app.command()(forget)
app.command()(audit)
app.add_typer(deploy_app, name="deploy")
console = Console()
err_console = Console(stderr=True)


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def up() -> None:
    """Run the stack on this machine: the embedded broker (unless LLMWATCH_KAFKA_BOOTSTRAP_SERVERS is set),
    the store, the ingest worker and the dashboard (unless LLMWATCH_DASHBOARD__ENABLED=false); with
    LLMWATCH_SERVING__ENABLED=true also vLLM (unless LLMWATCH_SERVING__VLLM_URL is set) and the gateway;
    with LLMWATCH_TRAINING__ENABLED=true also the trainer and the deployer.
    Stop with Ctrl-C."""
    from processors.agents import run_worker
    from streams.kafka.broker import EmbeddedBroker
    from streams.processes import ChildCommand

    settings = load_settings()
    _logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    if settings.embedded_broker:
        broker = EmbeddedBroker(settings.embedded_kafka_port, log_file=settings.data_dir / "broker.log")
        broker.start()
        console.print(f"embedded broker on {broker.bootstrap_servers} (memory only: it keeps nothing across restarts)")
    serving = dashboard = training = deploying = None
    try:
        logs = settings.data_dir / "logs"
        if settings.dashboard.enabled:
            from llmwatch.dashboard.server import check_exposure

            check_exposure(settings)
            dashboard = ChildCommand("dashboard", logs, stop_timeout=10)
            dashboard.start()
            console.print(f"dashboard on {settings.dashboard.url} (log: {dashboard.log_file})")
        if settings.serving.enabled:
            from serving.stack import ServingStack

            serving = ServingStack(settings, console.print)
            serving.start()
        if settings.training.enabled:
            training = ChildCommand("trainer", logs, stop_timeout=150)
            training.start()
            console.print(f"trainer: retrains on alerts that ask for it (log: {training.log_file})")
            deploying = ChildCommand("deployer", logs, stop_timeout=30)
            deploying.start()
            console.print(f"deployer: canaries passing candidates (log: {deploying.log_file})")
        run_worker(settings)
    finally:
        if deploying is not None:
            deploying.stop()  # a canary stays where it is; the next deployer resumes it
        if training is not None:
            training.stop()  # a run in progress ends as failed while the broker can still take that event
        if dashboard is not None:
            dashboard.stop()
        if serving is not None:
            serving.stop()  # first: the gateway flushes its events while the broker still runs
        if broker is not None:
            broker.stop()


@app.command()
def gateway(
    processes: Annotated[int | None, typer.Option(
        min=1, max=64, help="Gateway processes sharing the port, each on a core of its own "
        "(default: LLMWATCH_SERVING__GATEWAY_PROCESSES, else 1).")] = None,
    process_index: Annotated[int | None, typer.Option(
        min=0, hidden=True, help="Run as process INDEX of a gateway of --processes (set by that gateway).")] = None,
) -> None:
    """Run only the OpenAI-compatible gateway on LLMWATCH_SERVING__HOST:PORT (127.0.0.1:8080), in front of
    the vLLM at LLMWATCH_SERVING__VLLM_URL (default: the one `llmwatch up` or `llmwatch vllm` starts)."""
    from serving.stack import run_gateway, serve

    settings = load_settings()
    if processes is not None:
        settings = settings.model_copy(update={
            "serving": settings.serving.model_copy(update={"gateway_processes": processes})})
    _logging(settings)
    if process_index is None:
        run_gateway(settings)
    else:
        serve(settings, process_index)


@app.command()
def dashboard() -> None:
    """Run only the web dashboard on LLMWATCH_DASHBOARD__HOST:PORT (127.0.0.1:8090): Overview, Alerts, Loop,
    Requests and Dead letters, read-only, through the same path as `llmwatch sql`. Beyond loopback it needs
    LLMWATCH_DASHBOARD__API_KEYS (a JSON list; a browser asks for one as a password)."""
    from llmwatch.dashboard.server import run_dashboard

    settings = load_settings()
    _logging(settings)
    run_dashboard(settings)


@app.command()
def vllm() -> None:
    """Run only vLLM on 127.0.0.1:LLMWATCH_SERVING__VLLM_PORT, serving LLMWATCH_SERVING__MODEL (default:
    SmolLM2-135M-Instruct, converted once into the data directory), until Ctrl-C."""
    import signal

    from serving.vllm.launcher import VllmServer

    settings = load_settings()
    _logging(settings)
    server = VllmServer(settings, settings.data_dir / "logs" / "vllm.log")
    server.start(console.print)
    try:
        server.wait_ready(console.print)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()


@app.command()
def worker(
    processes: Annotated[int | None, typer.Option(
        min=1, envvar="LLMWATCH_WORKER_PROCESSES", show_default="1",
        help="Worker processes in one consumer group, at most LLMWATCH_TOPICS__PARTITIONS; with the "
        "embedded store this one owns it and the others write through it.")] = None,
) -> None:
    """Run only the ingest worker, against the configured broker and store (scale out with --processes, or by
    running more in one group against a ClickHouse server)."""
    import os

    from processors.agents import run_worker

    if processes is not None:  # through the environment, so that the settings check it like any other
        os.environ["LLMWATCH_WORKER_PROCESSES"] = str(processes)
    settings = load_settings()
    _logging(settings)
    run_worker(settings)


@app.command()
def broker() -> None:
    """Run only the embedded broker on LLMWATCH_EMBEDDED_KAFKA_PORT, until Ctrl-C."""
    import signal

    from streams.kafka.broker import EmbeddedBroker
    from streams.kafka.topics import ensure_topics

    settings = load_settings()
    _logging(settings)
    with EmbeddedBroker(settings.embedded_kafka_port) as embedded:
        ensure_topics(embedded.bootstrap_servers, settings.topics)
        console.print(f"embedded broker on {embedded.bootstrap_servers}; Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})


@app.command()
def migrate() -> None:
    """Create or upgrade the ClickHouse tables and apply retention; safe to run again. While a worker owns
    the embedded store, the worker does it (this is one of the few writes outside `llmwatch sql`)."""
    from streams.store.admin import run_command

    settings = load_settings()
    version = run_command(settings, "migrate", retention=settings.retention.model_dump())
    console.print(f"store at schema version {version}")


@app.command()
def demo(
    events: Annotated[int, typer.Option(min=1, help="How many messages to publish.")] = 3000,
    rate: Annotated[float, typer.Option(min=1, help="Messages per second.")] = 1000,
    feedback_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of requests that get feedback.")] = 0.3,
    malformed_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of malformed messages.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed for reproducible traffic.")] = 7,
    keep_running: Annotated[bool, typer.Option(help="Leave the stack it started running.")] = False,
    incident: Annotated[bool, typer.Option(help="Then a latency incident (about a minute) that fires and resolves "
                                           "the default latency alert.")] = True,
    serving: Annotated[bool, typer.Option("--serving", help="Real chat requests through the gateway and vLLM "
                                          "instead (starts them too; vLLM loads in about a minute).")] = False,
    requests: Annotated[int, typer.Option(min=1, help="With --serving: how many chat requests.")] = 12,
) -> None:
    """Publish realistic inference and feedback traffic (some malformed) and show it land in ClickHouse.

    Starts the embedded stack for the duration unless one is already running (or an external Kafka
    is configured), then checks that every event is a row or a dead letter."""
    from llmwatch.demo import run_demo
    from llmwatch.traffic import TrafficMix

    settings = load_settings()
    if serving:
        from llmwatch.serving_demo import run_serving_demo

        if not run_serving_demo(settings, requests=requests, seed=seed, keep_running=keep_running, console=console):
            raise typer.Exit(1)
        return
    mix = TrafficMix(feedback_ratio=feedback_ratio, malformed_ratio=malformed_ratio)
    if incident and (not settings.alerts.enabled or settings.alerts.rules_file is not None):
        console.print("no latency incident: it shows the default alert rules, and these settings use others")
        incident = False
    if not run_demo(settings, events=events, rate=rate, mix=mix, seed=seed, keep_running=keep_running,
                    console=console, incident=incident):
        raise typer.Exit(1)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help='SQL, e.g. "SELECT model, count() FROM inference_events"')],
    format: Annotated[Literal["table", "csv", "json"], typer.Option("--format", "-f")] = "table",
) -> None:
    """Query ClickHouse, read-only: statements that change tables or data are refused (llmwatch's own writes
    have their own commands). Replayed duplicates are collapsed (FINAL). With the embedded store, the query
    goes through the running worker that owns it, or opens the store directly when none runs."""
    from streams.store.sql import query as run

    result = run(load_settings(), query)
    if format == "json":
        for row in result.rows:
            sys.stdout.write(json.dumps(dict(zip(result.columns, row, strict=True)), default=str) + "\n")
    elif format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
    else:
        table = Table(*result.columns)
        for row in result.rows:
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        console.print(table)


@schemas_app.command("export")
def schemas_export(directory: Annotated[Path, typer.Argument(help="Where to write <kind>.schema.json")]) -> None:
    """Write one JSON Schema per event kind, for producers in other languages."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        console.print(str(path))


app.command()(trainer)
app.command()(train)
app.command()(deployments)
app.command()(deployer)


def main() -> None:
    try:
        app()
    except LlmwatchError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except ModuleNotFoundError as exc:
        err_console.print(f"[red]error:[/] this command needs `{exc.name}`, which comes with an extra: "
                          "pip install 'llmwatch[worker]' (the worker), '[serving]' (the gateway), "
                          "'[dashboard]' (the web UI), '[train]' (retraining) or '[all]'")
        sys.exit(1)

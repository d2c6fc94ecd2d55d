"""`llmwatch deployments` and `llmwatch deploy`: what serves traffic, how it got there, and changing it by hand."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from schemas.errors import LlmwatchError
from schemas.events import DeploymentEvent
from streams.settings import Settings, load_settings

deploy_app = typer.Typer(help="What serves traffic now, and rolling it back by hand.")
console = Console()


def _weights(weights: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:g}" for name, share in weights.items()) or "(removed: the base model)"


def _routes(settings: Settings) -> dict[str, dict[str, float]]:
    from serving.gateway.route_events import current_routes_sql
    from streams.store.sql import query

    rows = query(settings, current_routes_sql(settings.serving.served_model_name), open_store=False).rows
    return {route: {k: float(v) for k, v in dict(weights).items()} for route, weights, _ in rows if weights}


def _print_routes(settings: Settings) -> None:
    routes = _routes(settings)
    table = Table("route", "weights (percent share)")
    for route, weights in routes.items():
        table.add_row(route, _weights(weights))
    console.print(table if routes else f"no routes: requests go to the model they name "
                                       f"(the base model is {settings.serving.served_model_name})")


def deployments(limit: Annotated[int, typer.Option(min=1)] = 30) -> None:
    """Current routes, then every change to them newest first, with each adapter's training run and alert."""
    from streams.store.deployments import history

    settings = load_settings()
    _print_routes(settings)
    rows = history(settings, settings.serving.served_model_name, limit)
    table = Table("time (UTC)", "deployment", "action", "status", "adapter", "route: weights", "by", "run", "alert",
                  "reason")
    for row in rows:
        change = f"{row['route']}: {_weights(row['weights'])}" if row["route"] else ""
        table.add_row(str(row["timestamp"])[:19], row["deployment_id"], row["action"], row["status"], row["adapter"],
                      change, row["actor"], row["run_id"] or "", str(row["trigger_alert_id"] or ""),
                      row["reason"][:80])
    console.print(table if rows else "no deployments yet")


@deploy_app.command("status")
def status() -> None:
    """The routes every gateway applies now."""
    _print_routes(load_settings())


def served_models(settings: Settings) -> set[str]:
    request = urllib.request.Request(f"{settings.serving.vllm_base_url}/v1/models")
    if key := settings.serving.vllm_api_key.get_secret_value():
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return {model["id"] for model in json.loads(response.read())["data"]}
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise LlmwatchError(f"cannot ask vLLM at {settings.serving.vllm_base_url} what it serves ({exc}): a route "
                            "is never pointed at a model vLLM may not have; start vLLM (`llmwatch up`) or set "
                            "LLMWATCH_SERVING__VLLM_URL") from None


def _canary_on(settings: Settings, route: str) -> str | None:
    """The deployer's running canary on this route, if any: a rollback by hand ends it (it must not step on)."""
    from serving.deployer.process import event_from_row
    from serving.deployer.rollout import fold_all
    from streams.store.deployments import latest_rollout

    try:
        state = fold_all(event_from_row(row) for row in latest_rollout(settings, settings.serving.served_model_name))
    except LlmwatchError:
        return None  # no store to ask: the deployer is not running a canary it could read approvals for either
    return state.deployment_id if state is not None and state.active and state.route == route else None


@deploy_app.command("rollback")
def rollback(
    to: Annotated[str | None, typer.Option("--to", help="An adapter vLLM serves; default: the base model")] = None,
    route: Annotated[str | None, typer.Option(help="The route to change; default: the base model's name")] = None,
) -> None:
    """Send all of a route's traffic to one model now, published for every gateway (and recorded)."""
    settings = load_settings()
    base = settings.serving.served_model_name
    route = route or base
    target = to or base
    if target not in served_models(settings):
        raise LlmwatchError(f"vLLM does not serve {target!r}: load it first, or roll back to one it serves "
                            "(`llmwatch deploy status`, vLLM's /v1/models)")
    # A route named like the base model that points at the base model is no route at all: remove it.
    weights = {} if route == base and target == base else {target: 100.0}
    event = DeploymentEvent(deployment_id=_canary_on(settings, route) or f"manual-{uuid.uuid4().hex[:12]}",
                            base_model=base,
                            adapter_name=None if target == base else target, action="rollback", status="succeeded",
                            traffic_percent=100, route=route, weights=weights, actor="cli",
                            reason=f"rolled back by hand to {target}")
    from streams.publisher import Publisher

    with Publisher.from_settings(settings) as publisher:
        publisher.publish(event)
        publisher.flush()
    from llmwatch.audit_cli import record

    record(settings, "deploy.rollback", route, after={"weights": weights})
    console.print(f"route {route!r}: {_weights(weights)} (published; every gateway applies it)")


def _decide(action: str, reason: str) -> None:
    """Approve or pause the deployer's running canary: an event it reads from the table, and the audit trail."""
    from llmwatch.audit_cli import record
    from serving.deployer.process import event_from_row
    from serving.deployer.rollout import fold_all
    from streams.publisher import Publisher
    from streams.store.deployments import latest_rollout

    settings = load_settings()
    base = settings.serving.served_model_name
    state = fold_all(event_from_row(row) for row in latest_rollout(settings, base))
    if state is None or not state.active:
        raise LlmwatchError(f"no canary of {base} is running (`llmwatch deployments` shows the history); "
                            f"nothing to {action}")
    event = DeploymentEvent(deployment_id=state.deployment_id, base_model=base, adapter_name=state.candidate,
                            action=action, status="succeeded", actor="cli", reason=reason,
                            stable_adapter=state.stable, run_id=state.run_id, trigger_alert_id=state.trigger_alert_id)
    with Publisher.from_settings(settings) as publisher:
        publisher.publish(event)
        publisher.flush()
    record(settings, f"deploy.{action}", state.deployment_id,
           before={"phase": state.phase, "paused": state.paused}, after={"action": action, "reason": reason})
    console.print(f"{action} of {state.deployment_id} ({state.candidate}, now {state.phase}"
                  f"{', paused' if state.paused else ''}) published; the deployer acts on it within seconds")


@deploy_app.command("approve")
def approve(reason: Annotated[str, typer.Option(help="Why, for the history")] = "approved by hand") -> None:
    """Let the running canary go on: promote one that waits for approval (LLMWATCH_DEPLOY__REQUIRE_APPROVAL),
    or resume one that was paused."""
    _decide("approve", reason)


@deploy_app.command("pause")
def pause(reason: Annotated[str, typer.Option(help="Why, for the history")] = "paused by hand") -> None:
    """Hold the running canary at its current weight: no analysis moves it until `llmwatch deploy approve`.
    To take its traffic away instead: `llmwatch deploy rollback`."""
    _decide("pause", reason)


def deployer() -> None:
    """Run the deployer: each candidate that passed the gate (llm.models) is loaded into vLLM and canaried
    through the gateways, step by step (LLMWATCH_DEPLOY__STEPS, 10 -> 50 -> 100), each step judged on its
    interval's metrics against stable (LLMWATCH_DEPLOY__ANALYSIS_INTERVAL_SECONDS), then promoted or rolled
    back. `llmwatch up` starts it when LLMWATCH_TRAINING__ENABLED=true. Stop with Ctrl-C: a canary stays
    where it is, and the next deployer resumes it from the deployments table."""
    import logging

    from serving.deployer.process import run_deployer

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_deployer(settings)

"""The dashboard's web app: five read-only pages over the store, and plotly.js served from the `plotly` wheel.

Every read goes through `streams.store.sql.query` (with the embedded store, the worker that owns it), with
parameters bound by ClickHouse. The app never opens the embedded store itself: that would lock the worker
out. While no worker answers, each page says so and retries.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from llmwatch.dashboard import charts, queries
from llmwatch.dashboard.queries import Read, records
from llmwatch.rule_status import rule_series, rules_path
from schemas.errors import StoreError
from schemas.rules import RulesError, load_rules
from streams.settings import Settings
from streams.store.sql import query

HERE = Path(__file__).parent
PAGES = [("/", "Overview"), ("/alerts", "Alerts"), ("/loop", "Loop"), ("/requests", "Requests"),
         ("/dead-letters", "Dead letters")]
REFRESH_CHOICES = (0, 5, 10, 30, 60)
_TIME_TEXT = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")


@cache
def plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


def cell(value: Any) -> str:
    """How a value reads in a table cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return charts.utc_text(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v not in ("", None))
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    text = str(value)
    return text[:19] if _TIME_TEXT.match(text) else text  # a time that came through the worker as text


def raw_text(encoded: str, limit: int = 4096) -> str:
    """A dead letter's bytes (read as base64: a driver turns bytes that are not UTF-8 into hex), readable
    whatever they are: what is not printable UTF-8 as escapes."""
    data = base64.b64decode(encoded or "")
    text = data[:limit].decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)
    return text + (f"... ({len(data) - limit} more bytes)" if len(data) > limit else "")


def messages_text(value: Any) -> list[dict[str, str]]:
    """A chat prompt's turns (stored as JSON text)."""
    try:
        turns = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return [{"role": "?", "content": str(value)}]
    return [{"role": str(t.get("role", "")), "content": str(t.get("content", ""))} for t in turns or []
            if isinstance(t, dict)]


def authorised(request: Request, keys: list[str]) -> bool:
    """A key as `Authorization: Bearer`, `X-API-Key`, or the password of HTTP Basic (what a browser asks for)."""
    header = request.headers.get("authorization", "")
    offered = [request.headers.get("x-api-key", "")]
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        offered.append(credentials.strip())
    elif scheme.lower() == "basic":
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            offered.append(base64.b64decode(credentials).decode().partition(":")[2])
    return any(hmac.compare_digest(o.encode(), k.encode()) for o in offered if o for k in keys)


class KeyRequired(BaseHTTPMiddleware):
    def __init__(self, app: Any, keys: list[str]) -> None:
        super().__init__(app)
        self.keys = keys

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path == "/health" or authorised(request, self.keys):
            return await call_next(request)
        return PlainTextResponse("a dashboard key is required (LLMWATCH_DASHBOARD__API_KEYS)", 401,
                                 headers={"WWW-Authenticate": 'Basic realm="llmwatch"'})


def create_app(settings: Settings, read: Read | None = None) -> Starlette:
    """`read` defaults to the `llmwatch sql` path; tests may hand another read-only path to a store."""
    run: Read = read or partial(_read, settings)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["cell"] = cell
    templates.env.filters["raw_text"] = raw_text
    templates.env.filters["messages_text"] = messages_text
    windows = settings.metrics.window_seconds

    def page(request: Request, template: str, build: Callable[[], dict[str, Any]],
             **known: Any) -> Callable[[], Awaitable[Response]]:
        async def respond() -> Response:
            context: dict[str, Any] = {**known, "pages": PAGES, "path": request.url.path, "error": None,
                                       "now": charts.utc_text(datetime.now(UTC)),
                                       "refresh": _refresh(request, settings.dashboard.refresh_seconds),
                                       "refresh_choices": REFRESH_CHOICES, "ranges": list(queries.RANGES),
                                       "partial": request.query_params.get("partial") == "1"}
            code = 200
            try:
                context |= await run_in_threadpool(build)
            except StoreError as exc:
                context["error"] = str(exc)
                code = 503
            return templates.TemplateResponse(request, template, context, status_code=code)
        return respond

    async def overview(request: Request) -> Response:
        chosen = queries.span(request.query_params.get("range", queries.DEFAULT_RANGE), windows)

        def build() -> dict[str, Any]:
            data = queries.overview(run, chosen)
            return {**data, "figures": charts.overview_figures(data["series"], data["drift"])}
        return await page(request, "overview.html", build, span=chosen)()

    async def alerts(request: Request) -> Response:
        chosen = queries.span(request.query_params.get("range", "24h"), windows)

        def build() -> dict[str, Any]:
            try:
                rules = load_rules(rules_path(settings)).rules
                rules_error = None
            except RulesError as exc:
                rules, rules_error = [], str(exc)
            timeline = records(run, queries.TIMELINE_SQL, chosen.parameters)
            return {"rules_error": rules_error,
                    "series": rule_series(run, rules, datetime.now(UTC)),
                    "timeline": timeline, "timeline_figure": _timeline_figure(timeline),
                    "silences": records(run, queries.SILENCES_SQL)}
        return await page(request, "alerts.html", build, span=chosen)()

    async def loop(request: Request) -> Response:
        return await page(request, "loop.html", partial(_loop, run))()

    async def requests(request: Request) -> Response:
        kind = request.query_params.get("kind", "request")
        kind = kind if kind in queries.SEARCH_COLUMNS else "request"
        q = request.query_params.get("q", "").strip()

        def build() -> dict[str, Any]:
            found = queries.find_requests(run, kind, q) if q else []
            recent = [] if q else records(run, queries.RECENT_REQUESTS_SQL)
            return {"found": found, "recent": recent}
        return await page(request, "requests.html", build, kind=kind, q=q, kinds=list(queries.SEARCH_COLUMNS))()

    async def dead_letters(request: Request) -> Response:
        chosen = queries.span(request.query_params.get("range", "24h"), windows)

        def build() -> dict[str, Any]:
            counts = records(run, queries.DEAD_LETTER_COUNTS_SQL, chosen.parameters)
            return {"figure": charts.dead_letter_figure(counts),
                    "letters": records(run, queries.DEAD_LETTERS_SQL, chosen.parameters)}
        return await page(request, "dead_letters.html", build, span=chosen)()

    async def plotly(request: Request) -> Response:
        return Response(plotly_js(), media_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    keys = [key.get_secret_value() for key in settings.dashboard.api_keys if key.get_secret_value()]
    return Starlette(
        routes=[
            Route("/", overview), Route("/alerts", alerts), Route("/loop", loop), Route("/requests", requests),
            Route("/dead-letters", dead_letters), Route("/health", health),
            Route("/static/plotly.min.js", plotly),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(KeyRequired, keys=keys)] if keys else [],
    )


def _read(settings: Settings, sql: str, parameters: Mapping[str, Any]) -> Any:
    return query(settings, sql, parameters, timeout=30, open_store=False)


def _refresh(request: Request, default: int) -> int:
    try:
        return max(0, int(request.query_params.get("refresh", default)))
    except ValueError:
        return default


def _timeline_figure(timeline: list[dict[str, Any]]) -> dict[str, Any]:
    colors = {"firing": "#d62728", "resolved": "#2ca02c", "no_data": "#9467bd"}
    traces = []
    for state, color in colors.items():
        rows = [r for r in timeline if r["state"] == state]
        traces.append({"type": "scatter", "mode": "markers", "name": state, "marker": {"color": color, "size": 9},
                       "x": [charts.utc_text(r["timestamp"]) for r in rows], "y": [r["rule"] for r in rows],
                       "text": [f"{charts.series_name(r)} {cell(r['value'])}" for r in rows]})
    chart = charts.figure("timeline", "Firing and resolved", traces)
    chart["layout"]["yaxis"] = {"type": "category", "automargin": True}
    return chart


def _loop(read: Read) -> dict[str, Any]:
    """What the retraining loop left in the store, whichever of its tables and columns exist yet."""
    present = {r["name"] for r in records(read, queries.EXISTING_TABLES_SQL, {"names": list(queries.LOOP_TABLES)})}
    tables = {t: records(read, queries.LOOP_SQL[t]) if t in present else None for t in queries.LOOP_TABLES}
    runs: dict[str, dict[str, Any]] = {}
    for row in tables["training_runs"] or []:
        runs.setdefault(str(row.get("run_id")), row)  # newest first: the run's latest state
    candidates: dict[str, dict[str, Any]] = {}
    for row in tables["model_candidates"] or []:
        candidates.setdefault(str(row.get("run_id")), row)
    deployed: dict[str, dict[str, Any]] = {}
    for row in tables["deployments"] or []:
        deployed.setdefault(str(row.get("adapter_name")), row)
    alert_ids = sorted({str(r["trigger_alert_id"]) for r in runs.values() if r.get("trigger_alert_id")})
    triggers = {str(a["event_id"]): a for a in records(
        read, "SELECT event_id, rule, model, adapter, timestamp FROM alerts WHERE toString(event_id) IN "
              "{ids:Array(String)}", {"ids": alert_ids})} if alert_ids else {}
    lineage = []
    for run_id, run in runs.items():
        candidate = candidates.get(run_id, {})
        deployment = deployed.get(str(candidate.get("adapter_name")), {}) if candidate else {}
        alert = triggers.get(str(run.get("trigger_alert_id")), {})
        lineage.append({"alert": alert.get("rule", ""), "run": run_id, "run_status": run.get("status", ""),
                        "adapter": candidate.get("adapter_name", ""), "gate": candidate.get("passed_gate"),
                        "deployment": deployment.get("action", ""), "traffic": deployment.get("traffic_percent")})
    return {"tables": tables, "lineage": lineage, "canary": charts.canary_figure(tables["deployments"] or [])}

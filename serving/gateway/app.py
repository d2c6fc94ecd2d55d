"""The gateway's HTTP face: the OpenAI API in front of vLLM, feedback, route admin, metrics and health.

`create_app(settings)` wires the parts and does no I/O; the spool, the Kafka producer and the
connection pool to vLLM open when the app starts (lifespan) and close, flushed, when it stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from schemas.errors import ConfigurationError
from schemas.events import AuditEvent, DeploymentEvent, FeedbackContent, FeedbackEvent, key_fingerprint
from serving.gateway.auth import KeyRing, Scope, presented_key
from serving.gateway.limits import BodyLimit
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.proxy import Proxy, openai_error
from serving.gateway.recording import Rules
from serving.gateway.redaction import Redactor
from serving.gateway.route_events import RouteFeed
from serving.gateway.routing import Router, validate_name, validate_weights
from serving.gateway.sink import EventSink
from serving.gateway.spool import Spool
from serving.gateway.spools import adopt, orphaned, spool_dir
from serving.gateway.tokens import Signer, load_secret
from streams.settings import LOOPBACK, Settings

log = logging.getLogger(__name__)


class FeedbackIn(FeedbackContent):
    """POST /v1/feedback: what a user said about one response (the request id is the response's `id`)."""

    model_config = ConfigDict(extra="forbid")

    score: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False,
                                description="a rating normalised to [0, 1]")
    feedback_token: str | None = Field(
        default=None, max_length=128,
        description="the answer's feedback token (X-Feedback-Token); needed with a feedback key")


class RouteIn(BaseModel):
    """PUT /admin/routes/{name}: the traffic weights of a route, by base model or adapter name."""

    model_config = ConfigDict(extra="forbid")

    targets: dict[str, float] = Field(description='e.g. {"smollm2-135m": 90, "support-v4": 10}')
    shadow_base_model: bool = Field(
        default=False, description="true to let a route named like the base model take the base model's traffic")


BodyModel = TypeVar("BodyModel", bound=BaseModel)


def _body(request_body: bytes, model: type[BodyModel]) -> BodyModel:
    """Validate after the key check (a body parameter would be validated before it), 422 on failure."""
    try:
        return model.model_validate_json(request_body)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def _documented(model: type[BaseModel]) -> dict[str, Any]:
    """The body schema for /docs, since the handler reads the body itself."""
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}, "required": True}
    return {"requestBody": schema}


def _plain_errors(errors: Any) -> list[dict[str, Any]]:
    """Where and what, never the input: a 5 MB field is not echoed back, a NaN cannot break the JSON answer."""
    return [{"loc": [part if isinstance(part, int) else str(part)[:200] for part in error.get("loc", ())],
             "msg": str(error.get("msg", ""))[:500], "type": str(error.get("type", ""))} for error in errors]


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error["loc"][1:])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


class Gateway:
    """The parts of one gateway process (number `index` of the gateway's processes), and their start and stop."""

    def __init__(self, settings: Settings, index: int = 0) -> None:
        serving = settings.serving
        self.settings = settings
        self.index = index
        self.metrics = GatewayMetrics()
        self.keys = KeyRing(serving.api_keys, serving.feedback_api_keys, serving.admin_api_keys,
                            ops_open=serving.ops_open or serving.host in LOOPBACK)
        try:
            self.router = Router(serving.served_model_name, serving.routes)
        except ValueError as exc:
            raise ConfigurationError(f"LLMWATCH_SERVING__ROUTES: {exc}") from exc
        self.redactor = Redactor.from_settings(serving.redact, serving.redact_patterns)
        self.spool: Spool | None = None
        self.sink: EventSink | None = None
        self.proxy: Proxy | None = None
        self.signer: Signer | None = None
        self.route_feed = RouteFeed(settings, self.router)

    def change_route(self, name: str, weights: dict[str, float]) -> None:
        """Applied here at once and published on llm.deployments, so every other gateway applies it too."""
        assert self.sink is not None
        event = DeploymentEvent(deployment_id=f"admin-{uuid.uuid4().hex[:12]}", base_model=self.router.base_model,
                                action="route", status="succeeded", route=name, weights=weights, actor="admin",
                                traffic_percent=0)
        self.route_feed.log.apply(event)
        self.sink.submit(event)

    def audit(self, request: Request, action: str, target: str, before: Any, after: Any) -> None:
        """An admin change into the audit trail; the key that made it appears only as its fingerprint."""
        key = presented_key(request.headers)
        assert self.sink is not None
        self.sink.submit(AuditEvent(actor=key_fingerprint(key) if key else "gateway:no-key", action=action,
                                    target=target, before=json.dumps(before, sort_keys=True, default=dict),
                                    after=json.dumps(after, sort_keys=True, default=dict)))

    async def start(self) -> None:
        serving = self.settings.serving
        self.signer = Signer(load_secret(serving.feedback_secret.get_secret_value(), self.settings.data_dir))
        self.spool = Spool(spool_dir(self.settings.data_dir, self.index), serving.spool_max_bytes)
        if self.index == 0:
            await self._adopt_orphans(self.spool)
        rules = Rules(max_event_bytes=self.settings.max_event_bytes, user_ids=serving.user_ids,
                      hash_user=self.signer.user_hash)
        self.sink = EventSink(
            bootstrap_servers=self.settings.bootstrap_servers, topics=self.settings.topics, spool=self.spool,
            redactor=self.redactor, metrics=self.metrics, publish_timeout=serving.publish_timeout_seconds,
            max_backoff=serving.replay_max_backoff_seconds, queue_max=serving.queue_max_events,
            room_wait=serving.queue_full_wait_seconds, rules=rules,
        )
        self.proxy = Proxy(base_url=serving.vllm_base_url, api_key=serving.vllm_api_key.get_secret_value(),
                           router=self.router, sink=self.sink, metrics=self.metrics,
                           timeout=serving.upstream_timeout_seconds, signer=self.signer)
        await self.sink.start()
        await self.proxy.start()
        await self.route_feed.start()
        if self.keys.open:
            log.warning("no API keys configured (LLMWATCH_SERVING__API_KEYS): the gateway is open to anyone "
                        "who can reach %s:%d", serving.host, serving.port)
        log.info("gateway%s ready on http://%s:%d in front of vLLM at %s (base model %s)",
                 f" process {self.index} of {serving.gateway_processes}" if serving.gateway_processes > 1 else "",
                 serving.host, serving.port, serving.vllm_base_url, serving.served_model_name)

    async def _adopt_orphans(self, spool: Spool) -> None:
        """Process 0 takes over the spools of processes that no longer run (`serving.gateway.spools`)."""
        for orphan in orphaned(self.settings.data_dir, self.settings.serving.gateway_processes):
            try:
                await asyncio.to_thread(adopt, spool, orphan)
            except OSError as exc:
                log.error("adopting the orphaned spool %s failed (it stays for the next start): %s", orphan, exc)

    async def stop(self) -> None:
        await self.route_feed.stop()
        if self.proxy is not None:
            await self.proxy.stop()
        if self.sink is not None:
            await self.sink.stop()
        if self.spool is not None:
            self.spool.close()

    def refusal(self, request: Request, scope: Scope) -> Response | None:
        reason = self.keys.refusal(scope, presented_key(request.headers))
        if reason is None:
            return None
        self.metrics.rejected.labels("unauthorized").inc()
        return openai_error(401, reason, "invalid_request_error")


def create_app(settings: Settings, index: int = 0) -> FastAPI:
    gateway = Gateway(settings, index)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="llmwatch gateway", summary="OpenAI-compatible, in front of vLLM; every request is an event",
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway
    app.add_middleware(BodyLimit, max_bytes=settings.serving.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        gateway.metrics.rejected.labels("invalid_body").inc()
        errors = _plain_errors(exc.errors())
        message = _validation_message(errors)
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": 422},
                             "detail": errors}, status_code=422)

    async def chat_completions(request: Request) -> Response:
        assert gateway.proxy is not None
        return gateway.refusal(request, "client") or await gateway.proxy.complete(request, "chat")

    async def completions(request: Request) -> Response:
        assert gateway.proxy is not None
        return gateway.refusal(request, "client") or await gateway.proxy.complete(request, "completions")

    # The two endpoints every request takes are plain Starlette routes: FastAPI's per-request machinery
    # (dependency solving, its exit stack) cost 0.4 ms a request here, more than the gateway's own work,
    # and they take no parameters for it to solve. Their schema is OpenAI's.
    app.add_route("/v1/chat/completions", chat_completions, methods=["POST"], include_in_schema=False)
    app.add_route("/v1/completions", completions, methods=["POST"], include_in_schema=False)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        assert gateway.proxy is not None
        return gateway.refusal(request, "client") or await gateway.proxy.models()

    @app.post("/v1/feedback", status_code=202, openapi_extra=_documented(FeedbackIn))
    async def feedback(request: Request) -> Any:
        if refused := gateway.refusal(request, "feedback"):
            return refused
        assert gateway.sink is not None and gateway.signer is not None
        body = _body(await request.body(), FeedbackIn)
        token = body.feedback_token or request.headers.get("x-feedback-token")
        # A token, when sent, must match; only a trusted producer (a client key: the app's back end) may omit it.
        checked = token is not None or not gateway.keys.trusted_producer(presented_key(request.headers))
        if checked and not gateway.signer.valid(body.request_id, token):
            gateway.metrics.rejected.labels("feedback_token").inc()
            return openai_error(403, "feedback_token does not belong to request_id: send the feedback_token "
                                     "(or X-Feedback-Token) that came with the answer", "invalid_request_error")
        event = FeedbackEvent(**body.model_dump(exclude={"feedback_token"}))
        gateway.sink.submit(event)
        gateway.metrics.feedback.inc()
        return {"status": "accepted", "request_id": event.request_id, "feedback_id": str(event.event_id)}

    @app.get("/admin/routes")
    async def get_routes(request: Request) -> Any:
        if refused := gateway.refusal(request, "admin"):
            return refused
        return {"base_model": gateway.router.base_model, "routes": dict(gateway.router.routes)}

    @app.put("/admin/routes/{name}", openapi_extra=_documented(RouteIn))
    async def put_route(request: Request, name: str) -> Any:
        if refused := gateway.refusal(request, "admin"):
            return refused
        assert gateway.proxy is not None
        body = _body(await request.body(), RouteIn)
        try:
            weights = validate_weights(name, body.targets)
        except ValueError as exc:
            return openai_error(422, str(exc), "invalid_request_error")
        if name == gateway.router.base_model and not body.shadow_base_model:
            return openai_error(409, f"a route named {name!r} would take the base model's own traffic: choose "
                                     "another name, or send \"shadow_base_model\": true if that is the point",
                                "invalid_request_error")
        try:
            served = await gateway.proxy.served_models()
        except Exception as exc:  # the route cannot be checked: refuse rather than route blind
            return openai_error(503, f"cannot list vLLM's models to check the targets ({exc!r}); try again",
                                "upstream_unavailable")
        missing = sorted(target for target, weight in weights.items() if weight > 0 and target not in served)
        if missing:
            return openai_error(409, f"vLLM does not serve {missing}: load the adapter first "
                                     "(POST /v1/load_lora_adapter on vLLM)", "invalid_request_error")
        before = gateway.router.routes.get(name)
        gateway.change_route(name, weights)
        gateway.audit(request, "route.change", name, before, weights)
        return {"name": name, "targets": weights}

    @app.delete("/admin/routes/{name}")
    async def delete_route(request: Request, name: str) -> Any:
        if refused := gateway.refusal(request, "admin"):
            return refused
        try:
            validate_name(name)
        except ValueError as exc:
            return openai_error(422, str(exc), "invalid_request_error")
        before = gateway.router.routes.get(name)
        if before is None:
            return openai_error(404, f"there is no route {name!r}", "invalid_request_error")
        gateway.change_route(name, {})
        gateway.audit(request, "route.delete", name, before, None)
        return {"deleted": name}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if refused := gateway.refusal(request, "ops"):
            return refused
        return Response(gateway.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health(request: Request) -> Any:
        if refused := gateway.refusal(request, "ops"):
            return refused
        assert gateway.proxy is not None and gateway.sink is not None
        return {"status": "ok", "vllm": "ready" if await gateway.proxy.vllm_ready() else "unreachable",
                "events": gateway.sink.status(), "process": {"index": gateway.index, "pid": os.getpid()}}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        return gateway.refusal(request, "ops") or JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        return gateway.refusal(request, "ops") or get_swagger_ui_html(openapi_url="/openapi.json",
                                                                      title="llmwatch gateway")

    return app

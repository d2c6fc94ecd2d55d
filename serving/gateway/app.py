"""The gateway's HTTP face: the OpenAI API in front of vLLM, feedback, route admin, metrics and health.

`create_app(settings)` wires the parts and does no I/O; the spool, the Kafka producer and the
connection pool to vLLM open when the app starts (lifespan) and close, flushed, when it stops.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, ValidationError
from starlette.responses import Response

from schemas.errors import ConfigurationError
from schemas.events import FeedbackContent, FeedbackEvent
from serving.gateway.auth import KeyRing, Scope, presented_key
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.proxy import Proxy, openai_error
from serving.gateway.redaction import Redactor
from serving.gateway.routing import Router, validate_weights
from serving.gateway.sink import EventSink
from serving.gateway.spool import Spool
from streams.settings import Settings

log = logging.getLogger(__name__)


class FeedbackIn(FeedbackContent):
    """POST /v1/feedback: what a user said about one response (the request id is the response's `id`)."""

    model_config = ConfigDict(extra="forbid")


class RouteIn(BaseModel):
    """PUT /admin/routes/{name}: the traffic weights of a route, by base model or adapter name."""

    model_config = ConfigDict(extra="forbid")

    targets: dict[str, NonNegativeFloat] = Field(description='e.g. {"smollm2-135m": 90, "support-v4": 10}')


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


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error["loc"][1:])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


class Gateway:
    """The parts of one gateway process, and their start and stop."""

    def __init__(self, settings: Settings) -> None:
        serving = settings.serving
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.keys = KeyRing(serving.api_keys, serving.feedback_api_keys, serving.admin_api_keys)
        try:
            self.router = Router(serving.served_model_name, serving.routes)
        except ValueError as exc:
            raise ConfigurationError(f"LLMWATCH_SERVING__ROUTES: {exc}") from exc
        self.redactor = Redactor.from_settings(serving.redact, serving.redact_patterns)
        self.spool: Spool | None = None
        self.sink: EventSink | None = None
        self.proxy: Proxy | None = None

    async def start(self) -> None:
        serving = self.settings.serving
        self.spool = Spool(self.settings.data_dir / "spool" / "gateway", serving.spool_max_bytes)
        self.sink = EventSink(
            bootstrap_servers=self.settings.bootstrap_servers, topics=self.settings.topics, spool=self.spool,
            redactor=self.redactor, metrics=self.metrics, publish_timeout=serving.publish_timeout_seconds,
            max_backoff=serving.replay_max_backoff_seconds, queue_max=serving.queue_max_events,
        )
        self.proxy = Proxy(base_url=serving.vllm_base_url, api_key=serving.vllm_api_key.get_secret_value(),
                           router=self.router, sink=self.sink, metrics=self.metrics,
                           timeout=serving.upstream_timeout_seconds)
        await self.sink.start()
        await self.proxy.start()
        if self.keys.open:
            log.warning("no API keys configured (LLMWATCH_SERVING__API_KEYS): the gateway is open to anyone "
                        "who can reach %s:%d", serving.host, serving.port)
        log.info("gateway ready on http://%s:%d in front of vLLM at %s (base model %s)", serving.host, serving.port,
                 serving.vllm_base_url, serving.served_model_name)

    async def stop(self) -> None:
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


def create_app(settings: Settings) -> FastAPI:
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="llmwatch gateway", summary="OpenAI-compatible, in front of vLLM; every request is an event",
                  lifespan=lifespan)
    app.state.gateway = gateway

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        gateway.metrics.rejected.labels("invalid_body").inc()
        errors = jsonable_encoder(exc.errors())
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
        assert gateway.sink is not None
        body = _body(await request.body(), FeedbackIn)
        event = FeedbackEvent(**body.model_dump())
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
        try:
            served = await gateway.proxy.served_models()
        except Exception as exc:  # the route cannot be checked: refuse rather than route blind
            return openai_error(503, f"cannot list vLLM's models to check the targets ({exc!r}); try again",
                                "upstream_unavailable")
        missing = sorted(target for target, weight in weights.items() if weight > 0 and target not in served)
        if missing:
            return openai_error(409, f"vLLM does not serve {missing}: load the adapter first "
                                     "(POST /v1/load_lora_adapter on vLLM)", "invalid_request_error")
        gateway.router.set_route(name, weights)
        log.info("route %r set to %s", name, weights)
        return {"name": name, "targets": weights}

    @app.delete("/admin/routes/{name}")
    async def delete_route(request: Request, name: str) -> Any:
        if refused := gateway.refusal(request, "admin"):
            return refused
        if not gateway.router.delete_route(name):
            return openai_error(404, f"there is no route {name!r}", "invalid_request_error")
        log.info("route %r deleted", name)
        return {"deleted": name}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health() -> Any:
        assert gateway.proxy is not None and gateway.sink is not None
        return {"status": "ok", "vllm": "ready" if await gateway.proxy.vllm_ready() else "unreachable",
                "events": gateway.sink.status()}

    return app

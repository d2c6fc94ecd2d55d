"""The worker's HTTP face on loopback: health and counts for operators, Prometheus metrics, read-only SQL for
`llmwatch sql` and the dashboard, llmwatch's own few writes (`streams.store.admin`) for the CLI while this
worker owns the store, and the store itself for the other processes of `llmwatch worker --processes N`."""

from __future__ import annotations

import hmac
import pickle
from dataclasses import asdict
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from processors.embedding import Embedder
from processors.ingest import Ingest
from schemas.errors import StoreError
from streams.store.admin import COMMANDS, call_command
from streams.store.remote import OWN_SESSION, PATH, pickled_outcome, resolve
from streams.store.runner import Store
from streams.store.sql import run_query
from streams.store.writer import ClickHouseWriter


def register_views(app: faust.App, store: Store, ingest: Ingest, writer: ClickHouseWriter,
                   token: str, registry: CollectorRegistry, embedder: Embedder | None = None, *,
                   serve_store: bool = False) -> None:
    def authorised(request: Request) -> bool:
        return hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}")

    async def body(request: Request) -> dict[str, Any] | None:
        try:
            value = await request.json()
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    @app.page("/llmwatch/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({
                "status": "ok",
                "ingest": {table: asdict(counts) for table, counts in ingest.counts.items()},
                "writer": {table: asdict(stats) for table, stats in writer.stats.items()},
                "embedder": None if embedder is None else {"ready": embedder.ready, "embedded": embedder.embedded},
            })

    # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 by definition.
    exposition = "; ".join(p for p in CONTENT_TYPE_LATEST.split("; ") if not p.startswith("charset"))

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(registry), content_type=exposition)

    @app.page("/llmwatch/sql")
    class Sql(View):
        async def post(self, request: Request) -> Response:
            if not authorised(request):
                return self.error(401, "missing or wrong token: use `llmwatch sql`, which reads worker.json")
            sent = await body(request) or {}
            sql, parameters = sent.get("query"), sent.get("parameters") or {}
            if not isinstance(sql, str) or not sql.strip() or not isinstance(parameters, dict):
                return self.error(400, 'send {"query": "SELECT ... {name:Type}", "parameters": {"name": value}}')
            try:
                result = await store.call_in_own_session(run_query, sql, parameters)
            except StoreError as exc:
                return self.error(400, str(exc))
            return self.bytes(result.to_json(), content_type="application/json")

    @app.page("/llmwatch/admin")
    class Admin(View):
        async def post(self, request: Request) -> Response:
            if not authorised(request):
                return self.error(401, "missing or wrong token: use the llmwatch command, which reads worker.json")
            command = await body(request) or {}
            name, args = command.get("command"), command.get("args", {})
            if name not in COMMANDS or not isinstance(args, dict):
                return self.error(400, f'send {{"command": one of {sorted(COMMANDS)}, "args": {{...}}}}')
            try:
                result = await store.call(call_command, name, args)
            except StoreError as exc:
                return self.error(400, str(exc))
            return self.json({"result": result})

    if not serve_store:
        return

    @app.page(PATH)
    class StoreCall(View):
        """`streams.store.remote.RemoteStore` calls land here; the answer waits for the store's own."""

        async def post(self, request: Request) -> Response:
            if not authorised(request):
                return self.error(401, "missing or wrong token: only worker processes of this store call here")
            try:
                fn = resolve(request.headers.get("X-Llmwatch-Call", ""))
            except StoreError as exc:
                return self.error(400, str(exc))
            args, kwargs = pickle.loads(await self.read_request_content(request))
            own = request.headers.get("X-Llmwatch-Session") == OWN_SESSION
            try:
                result = await (store.call_in_own_session if own else store.call)(fn, *args, **kwargs)
            except Exception as exc:  # raised again in the caller, whatever it is
                return self.bytes(pickled_outcome(exc, failed=True), content_type="application/octet-stream")
            return self.bytes(pickled_outcome(result, failed=False), content_type="application/octet-stream")

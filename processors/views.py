"""The worker's HTTP face on loopback: health and counts for operators, SQL for `llmwatch sql`."""

from __future__ import annotations

import hmac
from dataclasses import asdict

import faust
from faust.web import Request, Response, View

from processors.ingest import Ingest
from schemas.errors import StoreError
from streams.store.runner import StoreRunner
from streams.store.sql import run_query
from streams.store.writer import ClickHouseWriter


def register_views(app: faust.App, store: StoreRunner, ingest: Ingest, writer: ClickHouseWriter,
                   token: str) -> None:
    @app.page("/llmwatch/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({
                "status": "ok",
                "ingest": {table: asdict(counts) for table, counts in ingest.counts.items()},
                "writer": {table: asdict(stats) for table, stats in writer.stats.items()},
            })

    @app.page("/llmwatch/sql")
    class Sql(View):
        async def post(self, request: Request) -> Response:
            if not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
                return self.error(401, "missing or wrong token: use `llmwatch sql`, which reads worker.json")
            body = await request.json()
            sql = body.get("query") if isinstance(body, dict) else None
            if not isinstance(sql, str) or not sql.strip():
                return self.error(400, 'send {"query": "SELECT ..."}')
            try:
                result = await store.call(run_query, sql)
            except StoreError as exc:
                return self.error(400, str(exc))
            return self.bytes(result.to_json(), content_type="application/json")

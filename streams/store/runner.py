"""Every store call goes through one thread.

chdb is in-process and blocking, and one engine per process: a single thread keeps the client safe
and the Faust event loop free, and gives the server back end the same, simple ordering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from clickhouse_connect.driver.client import Client

from streams.settings import Retention
from streams.store.client import connect, migrate

T = TypeVar("T")


class Store(Protocol):
    """What the writer and the readers need: this process's `StoreRunner`, or a `RemoteStore` to the worker
    process that owns an embedded store. `fn` is a module-level function of `streams.store` taking the client
    first, so that either can run it."""

    dsn: str

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    async def call_in_own_session(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...


class StoreRunner:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Client | None = None

    def open(self, retention: Retention) -> int:
        """Connect and migrate, before the event loop starts; returns the schema version."""
        self._client = self._executor.submit(connect, self.dsn).result()
        return self._executor.submit(migrate, self._client, retention).result()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(client, *args, **kwargs) on the store thread."""
        if self._client is None:
            raise RuntimeError("StoreRunner.open() must be called first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._client, *args, **kwargs))

    async def call_in_own_session(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(client, ...) with a client of its own, on the store thread: a `SET` or `USE` it runs (an
        analyst's query) cannot change the session that ingest and the window job use."""
        if self._client is None:
            raise RuntimeError("StoreRunner.open() must be called first")

        def isolated() -> T:
            client = connect(self.dsn)
            try:
                return fn(client, *args, **kwargs)
            finally:
                client.close()

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, isolated)

    def close(self) -> None:
        if self._client is not None:
            self._executor.submit(self._client.close).result()
            self._client = None
        self._executor.shutdown(wait=True)

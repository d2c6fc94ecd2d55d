"""The embedded store through the worker process that owns it, for the other processes of `llmwatch worker
--processes N`: chdb opens a store in one process only.

A call names its function (`module:qualname`, a module-level function of `streams.store`) and pickles its
arguments; the owner runs it on its own `StoreRunner` and answers the pickled result or the exception,
raised here again, so that the writer retries a store that is away exactly as it does in the owner. The
call returns only after the owner's call has: a batch is acknowledged to Kafka only once its rows are stored.
Pickle runs code when loaded, so the token (known only to processes that can read worker.json) is the
guard; the allow-list keeps the owner to the store's own functions all the same.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp

from schemas.errors import StoreError, StoreUnavailableError
from streams.store.writer import store_unavailable

T = TypeVar("T")

PATH = "/llmwatch/store"
ALLOWED_PACKAGE = "streams.store."
OWN_SESSION = "own-session"


def function_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve(name: str) -> Callable[..., Any]:
    """The function a caller named, if it is a module-level function of a `streams.store` module."""
    module_name, _, qualname = name.partition(":")
    if not module_name.startswith(ALLOWED_PACKAGE) or not qualname.isidentifier():
        raise StoreError(f"{name!r} is not a function of {ALLOWED_PACKAGE}*: the owner runs only those")
    try:
        fn = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError) as exc:
        raise StoreError(f"{name!r} names no function: is this worker the same llmwatch version?") from exc
    if not callable(fn) or isinstance(fn, type) or getattr(fn, "__module__", None) != module_name:
        raise StoreError(f"{name!r} is not a function defined in {module_name}")
    return fn  # type: ignore[no-any-return]


def pickled_outcome(value: Any, failed: bool) -> bytes:
    """The answer to a call: an exception that cannot be pickled travels as a StoreError with its text,
    StoreUnavailableError when the writer would have waited it out."""
    try:
        return pickle.dumps((failed, value))
    except Exception:
        if not failed:
            raise
    kind = StoreUnavailableError if store_unavailable(value) else StoreError
    return pickle.dumps((True, kind(f"{type(value).__name__}: {value}")))


class RemoteStore:
    """`Store` over HTTP to the owner; one pooled session, opened in the event loop on first use."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + PATH
        self.dsn = f"{url} (the worker that owns the store)"
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
        self._session: aiohttp.ClientSession | None = None

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._post(fn, args, kwargs, own_session=False)

    async def call_in_own_session(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._post(fn, args, kwargs, own_session=True)

    async def _post(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
                    own_session: bool) -> T:
        if self._session is None:
            # No total timeout, as for the owner's own calls: an insert is never abandoned half way.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        headers = self._headers | {"X-Llmwatch-Call": function_name(fn)}
        if own_session:
            headers["X-Llmwatch-Session"] = OWN_SESSION
        try:
            async with self._session.post(self.url, data=pickle.dumps((args, kwargs)), headers=headers) as response:
                body = await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise StoreUnavailableError(f"cannot reach the worker that owns the store at {self.url}: {exc}. "
                                        "Is it running?") from exc
        if response.status != 200:
            raise StoreError(f"the worker that owns the store refused {function_name(fn)}: "
                             f"{response.status} {body.decode(errors='replace')}")
        failed, value = pickle.loads(body)
        if failed:
            raise value
        return value  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

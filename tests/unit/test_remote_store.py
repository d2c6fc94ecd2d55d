"""What the owner of an embedded store runs for the other worker processes, and what travels back."""

from __future__ import annotations

import pickle
import threading

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from schemas.errors import ConfigurationError, StoreError, StoreUnavailableError
from streams.settings import Settings, Topics, load_settings
from streams.store import admin, windows, writer
from streams.store.remote import function_name, pickled_outcome, resolve
from streams.store.writer import store_unavailable


@pytest.mark.parametrize("fn", [windows.fetch_inference, windows.count_stored_points, admin.call_command])
def test_a_store_function_is_resolved_by_its_name(fn: object) -> None:
    assert resolve(function_name(fn)) is fn  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [
    "os:system",
    "builtins:eval",
    "subprocess:run",
    "streams.settings:load_settings",  # llmwatch's own, but not the store's
    "streams.storehouse:anything",  # a name that only starts like the package
    "streams.store.writer:store_unavailable.__globals__",  # not a plain name
    "streams.store.writer:ClickHouseWriter",  # a class, not a function
    "streams.store.writer:random",  # a module the store module imported
    "streams.store.sql:connect",  # a function the module imported from another
    "streams.store.writer:no_such_function",
    "streams.store.nothing_here:fetch",
    "",
])
def test_anything_else_is_refused(name: str) -> None:
    with pytest.raises(StoreError):
        resolve(name)


def test_an_exception_travels_back_as_itself_so_the_writer_still_waits_out_an_absent_store() -> None:
    failed, exc = pickle.loads(pickled_outcome(OperationalError("Code: 210. connection refused"), failed=True))
    assert failed and isinstance(exc, OperationalError) and store_unavailable(exc)


class Unpicklable(OperationalError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def test_an_exception_that_cannot_be_pickled_travels_as_a_store_error_that_keeps_its_retryability() -> None:
    failed, exc = pickle.loads(pickled_outcome(Unpicklable("away"), failed=True))
    assert failed and isinstance(exc, StoreUnavailableError) and "Unpicklable: away" in str(exc)
    assert store_unavailable(exc), "the writer must retry it, not dead-letter the rows"
    failed, exc = pickle.loads(pickled_outcome(type("Odd", (ValueError,), {})("bad rows"), failed=True))
    assert type(exc) is StoreError and not store_unavailable(exc)


def test_store_unavailable_error_is_retried_by_the_writer() -> None:
    assert writer.store_unavailable(StoreUnavailableError("the owner is restarting"))


def test_more_processes_than_partitions_is_refused_with_what_to_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(worker_processes=4, topics=Topics(partitions=4), _env_file=None).worker_processes == 4
    monkeypatch.setenv("LLMWATCH_WORKER_PROCESSES", "3")
    monkeypatch.setenv("LLMWATCH_TOPICS__PARTITIONS", "2")
    with pytest.raises(ConfigurationError, match="LLMWATCH_TOPICS__PARTITIONS"):
        load_settings()


def test_each_worker_process_keeps_its_own_faust_dir() -> None:
    dirs = {Settings(worker_index=index, _env_file=None).faust_dir for index in range(3)}
    assert len(dirs) == 3

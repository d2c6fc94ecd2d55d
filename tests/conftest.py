"""Fixtures shared by every tier. A process can open one chdb path only, so the test process owns
exactly one store (`store`), and every worker under test runs in a process of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.settings import Retention
from streams.store.runner import StoreRunner


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreRunner]:
    runner = StoreRunner(f"chdb://{tmp_path_factory.mktemp('store')}")
    runner.open(Retention())
    yield runner
    runner.close()

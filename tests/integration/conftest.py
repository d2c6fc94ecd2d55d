"""The real Tansu broker for the session, and llmwatch workers as real processes of their own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics
from streams.processes import die_with_parent
from streams.publisher import Publisher
from streams.settings import Settings, Topics
from streams.store.sql import query, running_worker


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A conftest's `pytestmark` marks nothing, so each module here says `pytestmark = pytest.mark.integration`;
    one that forgets would run in the fast tier (`-m "not integration"`), so collection refuses it."""
    here = Path(__file__).parent
    unmarked = sorted({str(item.path.relative_to(here.parents[1])) for item in items
                       if item.path.is_relative_to(here) and item.get_closest_marker("integration") is None})
    if unmarked:
        raise pytest.UsageError(f"integration tests without `pytestmark = pytest.mark.integration`: {unmarked}")


_GIVEN_PORTS: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before in this session: the OS may give a just-closed port again,
    and two services of one `llmwatch up` given the same port fail to bind (seen: worker and dashboard)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def to_env(settings: Settings) -> dict[str, str]:
    """The LLMWATCH_* variables that make a child process build these same settings."""
    env = {}

    def put(name: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                put(f"{name}__{key}", item)
        elif value is not None:
            env[f"LLMWATCH_{name}".upper()] = json.dumps(value) if isinstance(value, list | tuple) else str(value)

    for name, value in settings.model_dump().items():
        put(name, value)
    return env


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return result


START_TIMEOUT = 180.0
"""How long a child may take to be ready: a liveness bound, not a speed check. A worker needs ~25 s on an idle
2-core machine (imports, the embedding model's warm-up) and over a minute when vLLM and other tests share it."""


@dataclass
class Child:
    """One `llmwatch COMMAND` process of a test. It dies with the test run, and a child that fails to become
    ready is killed at once, its log in the error, so that it cannot load the machine for the tests after it."""

    settings: Settings
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    command: ClassVar[str]

    def env(self) -> dict[str, str]:
        return to_env(self.settings)

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "llmwatch", self.command], stdout=log,
                                            stderr=subprocess.STDOUT, env=os.environ | self.env(),
                                            preexec_fn=die_with_parent)

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"llmwatch {self.command} exited with {self.process.returncode}:\n"
                                     f"{self.log_tail()}")
            return self.ready()

        try:
            wait_until(up, timeout, f"llmwatch {self.command} to be ready")
        except AssertionError as exc:
            if self.process.poll() is None:
                self.stop(signal.SIGKILL)
                raise AssertionError(f"{exc}; its log ends:\n{self.log_tail()}") from None
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(60)
        self.process = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Worker(Child):
    """One `llmwatch worker` process and the settings it runs with."""

    command: ClassVar[str] = "worker"

    def ready(self) -> bool:
        assert self.process is not None
        info = running_worker(self.settings)
        return info is not None and info["pid"] == self.process.pid

    def sql(self, sql: str) -> list[list[Any]]:
        return query(self.settings, sql).rows

    def count(self, sql: str) -> int:
        return int(self.sql(sql)[0][0])

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.settings.web_port}/llmwatch/health"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def publisher(self) -> Publisher:
        return Publisher.from_settings(self.settings)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(free_port(), log_file=log) as embedded:
        yield embedded


@pytest.fixture(scope="session")
def make_worker(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Worker]]:
    """Workers with their own store, topics and consumer group, so that tests never share state."""
    started: list[Worker] = []

    def make(**overrides: Any) -> Worker:
        run = uuid.uuid4().hex[:8]
        data_dir = tmp_path_factory.mktemp(f"worker-{run}")
        topics = Topics(**{name: f"{run}.{topic}" for name, topic in Topics().model_dump().items()
                           if isinstance(topic, str)})
        settings = Settings(data_dir=data_dir, kafka_bootstrap_servers=broker.bootstrap_servers,
                            app_id=f"llmwatch-test-{run}", web_port=free_port(), topics=topics,
                            ingest_flush_seconds=0.2, _env_file=None, **overrides)
        ensure_topics(broker.bootstrap_servers, topics)
        worker = Worker(settings, data_dir / "worker.log")
        started.append(worker)
        return worker

    yield make
    for worker in started:
        if worker.process is not None:
            worker.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def worker(make_worker: Callable[..., Worker]) -> Worker:
    """One running worker shared by the tests that only publish and query."""
    return make_worker().start()

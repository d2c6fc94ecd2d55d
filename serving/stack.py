"""Running the gateway: `llmwatch gateway` (uvicorn), and vLLM + gateway as children of `llmwatch up`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from schemas.errors import ServingError
from serving.vllm.launcher import VllmServer
from streams.processes import die_with_parent, stop_process
from streams.settings import Settings, require_keys_beyond_loopback

log = logging.getLogger(__name__)

def check_exposure(settings: Settings) -> None:
    require_keys_beyond_loopback("gateway", settings.serving.host, settings.serving.api_keys,
                                 "LLMWATCH_SERVING__API_KEYS")


def run_gateway(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests get 30 s to finish, then queued events are flushed."""
    import uvicorn

    from serving.gateway.app import create_app
    from serving.gateway.limits import server_options

    check_exposure(settings)
    app = create_app(settings)
    serving = settings.serving
    config = uvicorn.Config(app, host=serving.host, port=serving.port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=30, server_header=False,
                            **server_options(serving.max_header_bytes, serving.max_headers))
    server = uvicorn.Server(config)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again under the handlers found
    # at start; a stop that was asked for is a success, so those handlers do nothing (exit code 0).
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda *_: None)
    server.run()
    if not server.started:
        raise ServingError(f"the gateway could not start on {settings.serving.host}:{settings.serving.port} "
                           "(is the port taken? set LLMWATCH_SERVING__PORT)")


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
            stop_process(gateway, 60)
        if self.vllm is not None:
            self.vllm.stop()

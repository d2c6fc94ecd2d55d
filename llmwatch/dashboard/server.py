"""Running the dashboard: `llmwatch dashboard` (uvicorn), and as a child process of `llmwatch up`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable

from schemas.errors import ServingError
from streams.processes import die_with_parent, stop_process
from streams.settings import Settings, require_keys_beyond_loopback


def check_exposure(settings: Settings) -> None:
    require_keys_beyond_loopback("dashboard", settings.dashboard.host, settings.dashboard.api_keys,
                                 "LLMWATCH_DASHBOARD__API_KEYS")


def run_dashboard(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM."""
    import uvicorn

    from llmwatch.dashboard.app import create_app

    check_exposure(settings)
    dashboard = settings.dashboard
    config = uvicorn.Config(create_app(settings), host=dashboard.host, port=dashboard.port, log_config=None,
                            access_log=False, timeout_graceful_shutdown=5, server_header=False)
    server = uvicorn.Server(config)
    for stop in (signal.SIGINT, signal.SIGTERM):  # a stop that was asked for is a success (see serving.stack)
        signal.signal(stop, lambda *_: None)
    server.run()
    if not server.started:
        raise ServingError(f"the dashboard could not start on {dashboard.host}:{dashboard.port} "
                           "(is the port taken? set LLMWATCH_DASHBOARD__PORT)")


class DashboardProcess:
    """`llmwatch dashboard` as a child of `llmwatch up`, in a process group of its own (Ctrl-C reaches only
    `up`, which stops it first: it only reads)."""

    def __init__(self, settings: Settings, progress: Callable[[str], None]) -> None:
        self.settings = settings
        self.progress = progress
        self.log = settings.data_dir / "logs" / "dashboard.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        check_exposure(self.settings)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as output:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "llmwatch", "dashboard"], stdout=output, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=os.environ.copy(), preexec_fn=die_with_parent, start_new_session=True,
            )
        self.progress(f"dashboard on {self.settings.dashboard.url} (log: {self.log})")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, 10)

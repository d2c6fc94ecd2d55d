"""Running the dashboard: `llmwatch dashboard` (uvicorn); `llmwatch up` starts it as a child command."""

from __future__ import annotations

import signal

from schemas.errors import ServingError
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

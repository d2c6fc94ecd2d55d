"""Several gateway processes behind one port, so that the gateway's capacity grows with the cores.

`llmwatch gateway --processes N` (or LLMWATCH_SERVING__GATEWAY_PROCESSES=N) starts N processes, each a whole
gateway (its own Kafka producer, route feed and spool, `serving.gateway.spools`) on a socket of its own,
bound with SO_REUSEPORT so that the kernel spreads connections over them. This process only supervises:
it holds the port (a bound socket that does not listen, so a second gateway cannot start on it), makes the
feedback-token secret once so that every process mints and checks the same tokens, gives the processes one
fresh folder for their Prometheus counters (/metrics adds them up), and stops them together: on SIGINT or
SIGTERM, or as soon as one of them exits (then with an error). They die with it, even if it is killed.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

from schemas.errors import ServingError
from serving.gateway.tokens import load_secret
from serving.stack import STOP_SECONDS, check_exposure, shared_socket
from streams.processes import die_with_parent, stop_all
from streams.settings import Settings

log = logging.getLogger(__name__)


def supervise(settings: Settings) -> None:
    serving = settings.serving
    count = serving.gateway_processes
    check_exposure(settings)
    load_secret(serving.feedback_secret.get_secret_value(), settings.data_dir)
    held = shared_socket(serving.host, serving.port)
    metrics_dir = tempfile.mkdtemp(prefix="llmwatch-gateway-metrics-")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    processes: list[subprocess.Popen[bytes]] = []
    exited: list[tuple[int, int]] = []
    try:
        env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        for index in range(count):
            # A session of its own: Ctrl-C in a terminal reaches only this process, which stops them in order.
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "llmwatch", "gateway", "--processes", str(count), "--process-index", str(index)],
                env=env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, start_new_session=True))
        log.info("gateway: %d processes on %s:%d (pids %s)", count, serving.host, serving.port,
                 ", ".join(str(process.pid) for process in processes))
        while not exited and not stop.wait(0.5):
            exited = [(index, code) for index, process in enumerate(processes)
                      if (code := process.poll()) is not None]
    finally:
        stop_all(processes, STOP_SECONDS)
        held.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if exited and not stop.is_set():
        index, code = exited[0]
        raise ServingError(f"gateway process {index} exited with code {code}, so the others were stopped too; "
                           "its error is in the log above")

"""The other processes of `llmwatch worker --processes N`: the first starts them, stops them, and they die with it.

Each is a whole `llmwatch worker` in the same consumer group (so Kafka splits the partitions among them), on
web port `web_port + index`, with a Faust data dir of its own. A process that dies is not restarted: the group
gives its partitions to the others, and what it had not stored is read again from its last commit.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

from streams.processes import detach_from_terminal, stop_all
from streams.settings import Settings

log = logging.getLogger(__name__)


class WorkerProcesses:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: list[subprocess.Popen[bytes]] = []
        self._stopping = False

    def start(self) -> None:
        """Start processes 1..N-1; call once this process is ready to serve the store (worker.json written)."""
        for index in range(1, self.settings.worker_processes):
            env = os.environ | {"LLMWATCH_WORKER_PROCESSES": "1", "LLMWATCH_WORKER_INDEX": str(index),
                                "LLMWATCH_WEB_PORT": str(self.settings.web_port + index)}
            self.processes.append(subprocess.Popen([sys.executable, "-m", "llmwatch", "worker"], env=env,
                                                   preexec_fn=detach_from_terminal))
            log.info("worker process %d started (pid %d, port %d)", index, self.processes[-1].pid,
                     self.settings.web_port + index)
            threading.Thread(target=self._watch, args=(index, self.processes[-1]), daemon=True,
                             name=f"worker-{index}").start()

    def _watch(self, index: int, process: subprocess.Popen[bytes]) -> None:
        """Reap a process that ends, and say so unless we stopped it."""
        code = process.wait()
        if not self._stopping:
            log.warning("worker process %d (pid %d) exited with %d; the others take its partitions, and it is not "
                        "restarted", index, process.pid, code)

    def stop(self, timeout: float) -> None:
        """SIGTERM to every one at once (they drain their batches in parallel), SIGKILL to any still running
        `timeout` seconds later."""
        self._stopping = True
        stop_all(self.processes, timeout)
